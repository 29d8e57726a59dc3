package mymodel.serving;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Pattern;
import org.pytorch.serve.archive.model.ModelException;
import org.pytorch.serve.job.RestJob;
import org.pytorch.serve.metrics.IMetric;
import org.pytorch.serve.metrics.MetricCache;
import org.pytorch.serve.servingsdk.ModelServerEndpoint;
import org.pytorch.serve.util.ConfigManager;
import org.pytorch.serve.util.messages.InputParameter;
import org.pytorch.serve.util.messages.RequestInput;
import org.pytorch.serve.util.messages.WorkerCommands;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.WorkerState;
import org.pytorch.serve.wlm.WorkerThread;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Open Inference Protocol v2 (KServe / Triton REST) for TorchServe 0.12, on its own port.
 *
 * <p>Why not TorchServe's own routes: its {@code GET /v2/health/ready} answers {@code {"ready":
 * true}} whatever the workers do (even with none), and it has no REST route for model readiness or
 * model metadata. Why not an endpoint plugin on the inference port: a plugin registered for "v2"
 * takes every /v2 path there, and TorchServe runs plugins after it has released the request, so a
 * plugin cannot read a POST body (the infer request). So this plugin serves the whole protocol on
 * the address {@code oip_address} of config.properties (or {@code TS_OIP_ADDRESS}), inside the
 * TorchServe process:
 *
 * <ul>
 *   <li>{@code GET /v2/health/live}: 200 while the server runs.
 *   <li>{@code GET /v2/health/ready}, {@code GET /v2/models/{m}[/versions/{v}]/ready}: 200 when
 *       at least one worker of the model is READY, as docker/healthcheck.py defines readiness (one
 *       worker restarting does not take the replica out); 400 otherwise, as the protocol asks.
 *   <li>{@code GET /v2}: server metadata.
 *   <li>{@code GET /v2/models/{m}[/versions/{v}]} and {@code POST .../infer}: forwarded to the
 *       model's own handler through TorchServe's job queue (batching, timeouts, its latency
 *       metrics), the route in the {@code url_path} header; the handler owns the tensor layout.
 * </ul>
 *
 * <p>Every answer carries an {@code X-Request-ID}: the client's when it is a safe token (the rule
 * of handler/request_log.py), else a new UUID. The handler receives the same id as the job's
 * request id, and each request gets a line in TorchServe's access log with it.
 *
 * <p>Bounds, so that no client can take the JVM (and with it the whole server) down: at most
 * {@link #THREADS} requests are handled at once, so at most that many bodies of max_request_size
 * are on the heap ({@link #THREADS} MiB at the 1 MiB limit); {@link #QUEUED} more wait for a
 * thread, and the server closes any connection beyond those. The JDK server's own limits ({@link
 * #SERVER_LIMITS}, each overridable with -D in vmargs): {@code jdk.httpserver.maxConnections}
 * connections at once (it closes a connection beyond them at once), a request's headers and body
 * within {@code sun.net.httpserver.maxReqTime} seconds (a slow or held upload is cut off), and
 * idle connections closed after {@code sun.net.httpserver.idleInterval} seconds. A body announced
 * larger than max_request_size gets a 413 before a byte of it is read. Every error this plugin
 * answers is the project's JSON error: {@code {"code": ..., "type": ..., "error": ...}}.
 *
 * <p>TorchServe loads it as an endpoint plugin ({@code plugins_path}): instantiating the class is
 * the hook that starts the server. It declares no endpoint, so no TorchServe route changes.
 */
public class OpenInferenceProtocol extends ModelServerEndpoint {

    /** The request header that tells the handler which route a forwarded request came from. */
    static final String ROUTE_HEADER = "url_path";

    static final String ADDRESS_KEY = "oip_address";
    static final String ADDRESS_ENV = "TS_OIP_ADDRESS";

    /** The request id header, and what a client's id may be to be kept (as handler/request_log.py). */
    static final String REQUEST_ID_HEADER = "X-Request-ID";

    static final Pattern CLIENT_ID = Pattern.compile("[A-Za-z0-9._:/+=@-]{1,128}");

    /** Requests handled at once: each holds at most max_request_size of body on the heap. */
    static final int THREADS = 32;

    /** Requests with their headers in that wait for a thread; the JDK closes those beyond. */
    static final int QUEUED = 256;

    /**
     * The JDK HttpServer's limits (JDK 17.0.6 and later read them when the first server starts):
     * connections at once, seconds to receive a request's headers and body, seconds to send an
     * answer (the longest wait for the model, {@link #forward}, is 2 x responseTimeout + 60),
     * seconds an idle connection stays open, idle connections kept, and how often (ms) the
     * timers look at the connections.
     */
    static final String[][] SERVER_LIMITS = {
        {"jdk.httpserver.maxConnections", "256"},
        {"sun.net.httpserver.maxReqTime", "10"},
        {"sun.net.httpserver.maxRspTime", "300"},
        {"sun.net.httpserver.idleInterval", "30"},
        {"sun.net.httpserver.maxIdleConnections", "64"},
        {"sun.net.httpserver.clockTick", "1000"},
        {"sun.net.httpserver.timerMillis", "1000"},
    };

    private static final Logger logger = LoggerFactory.getLogger(OpenInferenceProtocol.class);
    private static final Logger accessLog = LoggerFactory.getLogger("ACCESS_LOG");
    private static final AtomicBoolean STARTED = new AtomicBoolean();

    /** TorchServe instantiates plugins more than once while it scans them; start one server. */
    public OpenInferenceProtocol() {
        super();
        if (STARTED.compareAndSet(false, true)) {
            start();
        }
    }

    private static void start() {
        // TS_OIP_ADDRESS overrides oip_address like TS_<KEY> overrides other keys; empty switches it off.
        String address = System.getenv(ADDRESS_ENV);
        if (address == null) {
            address = ConfigManager.getInstance().getConfiguration().getProperty(ADDRESS_KEY, "");
        }
        if (address.isBlank()) {
            logger.warn("{} is not set: the Open Inference Protocol is not served", ADDRESS_KEY);
            return;
        }
        URI uri = URI.create(address.trim());
        for (String[] limit : SERVER_LIMITS) {
            // a value given in vmargs (-D) wins; the JDK reads these once, at the first server
            if (System.getProperty(limit[0]) == null) {
                System.setProperty(limit[0], limit[1]);
            }
        }
        try {
            HttpServer server =
                    HttpServer.create(new InetSocketAddress(uri.getHost(), uri.getPort()), 1024);
            server.createContext("/", OpenInferenceProtocol::handle);
            server.setExecutor(executor());
            server.start();
            Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(0)));
            logger.warn(
                    "Open Inference Protocol v2 bound to: {} ({} requests at once, {} waiting, {}"
                            + " connections, {} s to receive a request)",
                    address,
                    THREADS,
                    QUEUED,
                    System.getProperty("jdk.httpserver.maxConnections"),
                    System.getProperty("sun.net.httpserver.maxReqTime"));
        } catch (IOException e) {
            // TorchServe stops: a configured protocol that cannot be served is an error.
            throw new UncheckedIOException("cannot serve the Open Inference Protocol on " + address, e);
        }
    }

    /**
     * {@link #THREADS} threads and {@link #QUEUED} places in line; the JDK server closes the
     * connection of a request the executor refuses.
     */
    static ThreadPoolExecutor executor() {
        ThreadPoolExecutor executor =
                new ThreadPoolExecutor(
                        THREADS,
                        THREADS,
                        30,
                        TimeUnit.SECONDS,
                        new LinkedBlockingQueue<>(QUEUED),
                        task -> {
                            Thread thread = new Thread(task, "oip-v2");
                            thread.setDaemon(true);
                            return thread;
                        },
                        new ThreadPoolExecutor.AbortPolicy());
        executor.allowCoreThreadTimeOut(true);
        return executor;
    }

    static void handle(HttpExchange exchange) throws IOException {
        long started = System.nanoTime();
        String requestId = requestId(exchange.getRequestHeaders().getFirst(REQUEST_ID_HEADER));
        try {
            answer(exchange, requestId, started);
        } finally {
            IN_FLIGHT.remove(requestId);
        }
    }

    static void answer(HttpExchange exchange, String requestId, long started) throws IOException {
        Reply reply;
        try {
            reply = route(exchange, requestId);
        } catch (RuntimeException e) {
            logger.error("Open Inference Protocol request failed", e);
            reply = Reply.error(500, "internal_error", "the server failed: " + e);
        }
        count(reply.status);
        exchange.getResponseHeaders().set("Content-Type", reply.contentType);
        exchange.getResponseHeaders().set(REQUEST_ID_HEADER, requestId);
        if (reply.close) {
            // the rest of a refused body is not read: the connection cannot carry another request
            exchange.getResponseHeaders().set("Connection", "close");
        }
        exchange.sendResponseHeaders(reply.status, reply.body.length == 0 ? -1 : reply.body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(reply.body);
        }
        exchange.close();
        if (accessLog.isInfoEnabled()) {
            // TorchServe's access-log line, with the request id
            accessLog.info(
                    "{} \"{} {} {}\" {} {} request_id={}",
                    exchange.getRemoteAddress(),
                    exchange.getRequestMethod(),
                    exchange.getRequestURI(),
                    exchange.getProtocol(),
                    reply.status,
                    (System.nanoTime() - started) / 1_000_000,
                    requestId);
        }
    }

    /**
     * The ids of the requests being answered. TorchServe keys the jobs of a batch by their id, so
     * two jobs in flight with one id would lose one answer: an id is never given twice at once.
     * (Not an exchange attribute: the JDK server keeps those per context, shared by every
     * exchange.)
     */
    static final Set<String> IN_FLIGHT = ConcurrentHashMap.newKeySet();

    /**
     * The client's id when it is a safe token and no request in flight has it, else a new one;
     * either way it is in {@link #IN_FLIGHT} until the request is answered.
     */
    static String requestId(String clientId) {
        if (clientId != null && CLIENT_ID.matcher(clientId).matches() && IN_FLIGHT.add(clientId)) {
            return clientId;
        }
        String id = UUID.randomUUID().toString();
        IN_FLIGHT.add(id);
        return id;
    }

    static Reply route(HttpExchange exchange, String requestId) throws IOException {
        String method = exchange.getRequestMethod();
        List<String> path = segments(exchange.getRequestURI());
        if (path.isEmpty() || !"v2".equals(path.get(0))) {
            return Reply.error(
                    404, "not_found", "not found: the Open Inference Protocol lives under /v2");
        }
        ModelRoute model = ModelRoute.parse(path);
        String action = model == null ? String.join("/", path) : model.action;
        boolean get = "GET".equals(method);
        boolean post = "POST".equals(method);
        if (model == null && get && path.size() == 1) {
            return serverMetadata();
        } else if (model == null && get && "v2/health/live".equals(action)) {
            return Reply.json(200, flag("live", true));
        } else if (model == null && get && "v2/health/ready".equals(action)) {
            boolean ready = serverReady();
            return Reply.json(ready ? 200 : 400, flag("ready", ready));
        } else if (model != null && get && "ready".equals(action)) {
            Model found = model.find();
            if (found == null) {
                return model.notFound();
            }
            boolean ready = isReady(found);
            JsonObject answer = flag("ready", ready);
            answer.addProperty("name", found.getModelName());
            return Reply.json(ready ? 200 : 400, answer);
        } else if (model != null && get && action.isEmpty()) {
            return forward(exchange, model, new byte[0], false, requestId);
        } else if (model != null && post && "infer".equals(action)) {
            byte[] body = readBody(exchange);
            if (body == null) {
                Reply tooLarge =
                        Reply.error(
                                413,
                                "payload_too_large",
                                "the body is larger than max_request_size ("
                                        + ConfigManager.getInstance().getMaxRequestSize()
                                        + " bytes)");
                return tooLarge.closing();
            }
            return forward(exchange, model, body, true, requestId);
        }
        String known = get || post ? "" : " (method " + method + ")";
        return Reply.error(
                404,
                "not_found",
                String.join("/", path) + " is not an Open Inference Protocol route" + known);
    }

    static Reply serverMetadata() {
        JsonObject server = new JsonObject();
        server.addProperty("name", "torchserve");
        server.addProperty("version", ConfigManager.getInstance().getVersion());
        server.add("extensions", new JsonArray());
        return Reply.json(200, server);
    }

    /** Every registered model (at least one) is ready. */
    static boolean serverReady() {
        ModelManager manager = ModelManager.getInstance();
        if (manager == null) {
            return false; // still starting
        }
        Map<String, Model> models = manager.getDefaultModels();
        boolean ready = !models.isEmpty();
        for (Model model : models.values()) {
            ready &= isReady(model);
        }
        return ready;
    }

    /**
     * At least one worker READY as the management API describes a worker (running, with its
     * model loaded): the model answers, if more slowly while another worker restarts.
     */
    static boolean isReady(Model model) {
        for (WorkerThread worker :
                ModelManager.getInstance().getWorkers(model.getModelVersionName())) {
            if (worker.isRunning() && worker.getState() == WorkerState.WORKER_MODEL_LOADED) {
                return true;
            }
        }
        return false;
    }

    /**
     * Hands the request to the model's handler as TorchServe's own inference API does (every
     * header, the body with its content type) and waits for the handler's answer.
     */
    static Reply forward(
            HttpExchange exchange, ModelRoute route, byte[] body, boolean infer, String requestId) {
        Model model = route.find();
        if (model == null) {
            return route.notFound();
        }
        RequestInput input = new RequestInput(requestId);
        String contentType = "";
        for (Map.Entry<String, List<String>> header : exchange.getRequestHeaders().entrySet()) {
            String value = String.join(",", header.getValue());
            input.updateHeaders(header.getKey(), value);
            if ("content-type".equalsIgnoreCase(header.getKey())) {
                contentType = value;
            }
        }
        input.updateHeaders(ROUTE_HEADER, route.path);
        input.updateHeaders("explain", "False");
        input.addParameter(new InputParameter("body", body, contentType));
        input.setClientExpireTS(model.getClientTimeoutInMills());

        ForwardedJob job = new ForwardedJob(model.getModelName(), route.version, input);
        if (infer) {
            countRequest(model.getModelName(), route.version);
        }
        try {
            if (!ModelManager.getInstance().addJob(job)) {
                return Reply.error(
                        503,
                        "overloaded",
                        "model '"
                                + model.getModelName()
                                + "' has no worker to serve it or its queue is full: try again");
            }
        } catch (ModelException e) {
            return Reply.error(404, "not_found", e.getMessage());
        }
        // A worker answers within its response timeout or is restarted, which fails the job.
        long waitSeconds = 2L * model.getResponseTimeout() + 60;
        try {
            return job.answer.get(waitSeconds, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            return Reply.error(
                    504, "timeout", "no answer from the model within " + waitSeconds + " s");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Reply.error(503, "unavailable", "interrupted while waiting for the model");
        } catch (ExecutionException e) {
            return Reply.error(500, "internal_error", "the model failed: " + e.getCause());
        }
    }

    /**
     * The body, or null when it is over TorchServe's max_request_size. A body over it is never
     * kept: one announced up to {@link #DRAINED} times the limit, or sent in chunks, is read and
     * dropped up to that much, so the client can read the 413 (a connection closed on unread
     * bytes is reset under it); a longer one is answered at once, unread. Either way within
     * maxReqTime, and the connection closes after the answer.
     */
    static byte[] readBody(HttpExchange exchange) throws IOException {
        int limit = ConfigManager.getInstance().getMaxRequestSize();
        InputStream in = exchange.getRequestBody();
        String announced = exchange.getRequestHeaders().getFirst("Content-Length");
        if (announced != null && announced.length() > 9) {
            return null;
        }
        if (tooLong(announced, limit)) {
            long length = Long.parseLong(announced.trim());
            if (length <= (long) DRAINED * limit) {
                drain(in, length);
            }
            return null;
        }
        byte[] body = in.readNBytes(limit + 1);
        if (body.length > limit) {
            drain(in, (long) DRAINED * limit);
            return null;
        }
        return body;
    }

    /** How many times max_request_size a refused body is read (and dropped) before it is cut. */
    static final int DRAINED = 4;

    static void drain(InputStream in, long most) throws IOException {
        byte[] scratch = new byte[64 * 1024];
        long left = most;
        int read;
        while (left > 0 && (read = in.read(scratch, 0, (int) Math.min(scratch.length, left))) >= 0) {
            left -= read;
        }
    }

    /** A Content-Length (at most 9 characters) over the limit. */
    static boolean tooLong(String announced, int limit) {
        try {
            return announced != null && Long.parseLong(announced.trim()) > limit;
        } catch (NumberFormatException e) {
            return false; // the JDK server has already refused a malformed length
        }
    }

    /** ts_inference_requests_total counts these requests as TorchServe's own routes do. */
    static void countRequest(String modelName, String version) {
        IMetric requests = MetricCache.getInstance().getMetricFrontend("ts_inference_requests_total");
        if (requests != null) {
            requests.addOrUpdate(
                    Arrays.asList(
                            modelName,
                            version == null ? "default" : version,
                            ConfigManager.getInstance().getHostName()),
                    1);
        }
    }

    /** Requests2XX / 4XX / 5XX count these answers as TorchServe counts its own. */
    static void count(int status) {
        String name =
                status >= 500 ? "Requests5XX" : status >= 400 ? "Requests4XX" : "Requests2XX";
        IMetric metric = MetricCache.getInstance().getMetricFrontend(name);
        if (metric != null && status >= 200) {
            metric.addOrUpdate(Arrays.asList("Host", ConfigManager.getInstance().getHostName()), 1);
        }
    }

    /** The URI's decoded path segments, without empty ones. */
    static List<String> segments(URI uri) {
        List<String> segments = new ArrayList<>();
        for (String segment : uri.getRawPath().split("/")) {
            if (!segment.isEmpty()) {
                segments.add(URLDecoder.decode(segment, StandardCharsets.UTF_8));
            }
        }
        return segments;
    }

    static JsonObject flag(String name, boolean value) {
        JsonObject object = new JsonObject();
        object.addProperty(name, value);
        return object;
    }

    /** v2/models/{model}[/versions/{version}][/{action}], and that path as the handler sees it. */
    static final class ModelRoute {
        final String model;
        final String version;
        final String action;
        final String path;

        private ModelRoute(String model, String version, String action, String path) {
            this.model = model;
            this.version = version;
            this.action = action;
            this.path = path;
        }

        static ModelRoute parse(List<String> path) {
            if (path.size() < 3 || !"models".equals(path.get(1))) {
                return null;
            }
            String version = null;
            int next = 3;
            if (path.size() >= 5 && "versions".equals(path.get(3))) {
                version = path.get(4);
                next = 5;
            }
            if (path.size() > next + 1) {
                return null;
            }
            String action = path.size() == next + 1 ? path.get(next) : "";
            return new ModelRoute(path.get(2), version, action, String.join("/", path));
        }

        /** The model this route names, or null. */
        Model find() {
            ModelManager manager = ModelManager.getInstance();
            try {
                return manager == null ? null : manager.getModel(model, version);
            } catch (ModelException e) {
                return null;
            }
        }

        Reply notFound() {
            String named = version == null ? "" : " version " + version;
            return Reply.error(
                    404, "not_found", "model '" + model + "'" + named + " is not served here");
        }
    }

    /** A status, a content type, a body, and whether the connection ends with it. */
    static final class Reply {
        final int status;
        final String contentType;
        final byte[] body;
        final boolean close;

        Reply(int status, String contentType, byte[] body) {
            this(status, contentType, body, false);
        }

        private Reply(int status, String contentType, byte[] body, boolean close) {
            this.status = status;
            this.contentType = contentType;
            this.body = body;
            this.close = close;
        }

        Reply closing() {
            return new Reply(status, contentType, body, true);
        }

        static Reply json(int status, JsonObject body) {
            return new Reply(
                    status, "application/json", body.toString().getBytes(StandardCharsets.UTF_8));
        }

        /** The project's error shape: {"code": status, "type": type, "error": message}. */
        static Reply error(int status, String type, String message) {
            JsonObject body = new JsonObject();
            body.addProperty("code", status);
            body.addProperty("type", type);
            body.addProperty("error", message);
            return json(status, body);
        }

        /** The stable type of an error TorchServe reports only by its status. */
        static String typeOf(int status) {
            switch (status) {
                case 400:
                    return "invalid_request";
                case 404:
                    return "not_found";
                case 408:
                case 504:
                    return "timeout";
                case 413:
                    return "payload_too_large";
                case 429:
                case 503:
                    return "overloaded";
                default:
                    return status >= 500 ? "internal_error" : "invalid_request";
            }
        }
    }

    /** An inference job whose answer is awaited here instead of written to a Netty channel. */
    static final class ForwardedJob extends RestJob {
        final CompletableFuture<Reply> answer = new CompletableFuture<>();

        ForwardedJob(String modelName, String version, RequestInput input) {
            super(null, modelName, version, WorkerCommands.PREDICT, input);
        }

        @Override
        public void response(
                byte[] body,
                CharSequence contentType,
                int statusCode,
                String statusPhrase,
                Map<String, String> responseHeaders) {
            String type =
                    contentType == null || contentType.length() == 0
                            ? "application/json"
                            : contentType.toString();
            try {
                // RestJob records TorchServe's latency metrics; with no channel it writes nothing.
                super.response(body, contentType, statusCode, statusPhrase, responseHeaders);
            } catch (RuntimeException e) {
                logger.warn("metrics of job {} not recorded", getJobId(), e);
            } finally {
                // The client is answered whatever the metrics did: it must never wait for nothing.
                answer.complete(new Reply(statusCode, type, body == null ? new byte[0] : body));
            }
        }

        @Override
        public void sendError(int status, String error) {
            answer.complete(Reply.error(status, Reply.typeOf(status), error));
        }

        @Override
        public boolean isOpen() {
            return true;
        }
    }
}
