package mymodel.serving;

import java.util.Locale;
import java.util.Map;
import java.util.WeakHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.pytorch.serve.servingsdk.ModelServerEndpoint;
import org.pytorch.serve.util.ConfigManager;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.ModelVersionedRefs;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Batching that follows the traffic: no batch delay while nothing queues, and each worker's
 * batch its share of the queue rather than all of it.
 *
 * <p>TorchServe 0.12's aggregator ({@code Model.pollBatch}) takes a worker's first job, then waits
 * up to {@code maxBatchDelay} for each further one, up to {@code batchSize} jobs. Two things
 * follow:
 *
 * <ul>
 *   <li>A lone request always waits the whole delay for company that does not come. ({@code
 *       maxBatchDelay 0} is no way out: it stops after the first extra job, so batches hold at most
 *       two.)
 *   <li>The first worker to poll takes every queued job, up to the batch size, while the other
 *       workers wait with nothing to do. With a few requests of many records each (four clients
 *       sending 100 records each), one worker scores all of them one after the other, and the
 *       service uses one core of two.
 * </ul>
 *
 * <p>So this plugin looks at every model's job queue every {@value #PERIOD_MS} ms:
 *
 * <ul>
 *   <li>The delay: the model's configured one (model-config.yaml) as soon as a request waits in
 *       the queue, 0 once the queue has been empty at {@value #QUIET_PERIODS} looks in a row.
 *   <li>The batch size: each worker's share of the queued requests (the queue over the running
 *       workers, rounded up), at least 1 and at most the configured batch size. It rises with the
 *       share at once and falls to it only after {@value #QUIET_PERIODS} looks in a row of a
 *       smaller one, so it follows the largest share of the last 100 ms: under load the queue is
 *       long only between batches, and batches stay full. A few queued requests go to the
 *       workers side by side.
 * </ul>
 *
 * <p>The management API's description shows the delay and the batch size in force. A model whose
 * configured batch size is 1 is left alone; one whose configured delay is 0 keeps it.
 *
 * <p>On with {@code adaptive_batching=true} in config.properties, or {@code TS_ADAPTIVE_BATCHING}.
 * TorchServe loads it as an endpoint plugin ({@code plugins_path}): instantiating the class starts
 * the timer. It declares no endpoint.
 */
public class AdaptiveBatching extends ModelServerEndpoint {

    static final String ENABLED_KEY = "adaptive_batching";
    /** How often the queues are looked at. */
    static final long PERIOD_MS = 5;
    /** Looks in a row at an empty queue before the delay goes to 0 (100 ms). */
    static final int QUIET_PERIODS = 20;

    private static final Logger logger = LoggerFactory.getLogger(AdaptiveBatching.class);
    private static final AtomicBoolean STARTED = new AtomicBoolean();
    /** Each model's configured delay and batch size, by model object (a re-registered model is a new one). */
    private static final Map<Model, Configured> CONFIGURED = new WeakHashMap<>();
    /** Each model's looks in a row at an empty queue. */
    private static final Map<Model, Integer> QUIET = new WeakHashMap<>();
    /** Each model's looks in a row at a share smaller than its batch size in force. */
    private static final Map<Model, Integer> SMALLER = new WeakHashMap<>();

    /** What model-config.yaml set, read before this plugin changes anything. */
    private static final class Configured {
        final int delay;
        final int batchSize;

        Configured(Model model) {
            delay = model.getMaxBatchDelay();
            batchSize = model.getBatchSize();
        }
    }

    /** TorchServe instantiates plugins more than once while it scans them; start one timer. */
    public AdaptiveBatching() {
        super();
        if (STARTED.compareAndSet(false, true)) {
            start();
        }
    }

    static boolean enabled() {
        // TorchServe's own spelling of a setting as a variable, read even where
        // enable_envvars_config is off
        String value = System.getenv("TS_" + ENABLED_KEY.toUpperCase(Locale.ROOT));
        if (value == null) {
            value = ConfigManager.getInstance().getConfiguration().getProperty(ENABLED_KEY, "false");
        }
        return Boolean.parseBoolean(value.trim());
    }

    private static void start() {
        if (!enabled()) {
            return;
        }
        ScheduledExecutorService timer =
                Executors.newSingleThreadScheduledExecutor(
                        task -> {
                            Thread thread = new Thread(task, "adaptive-batching");
                            thread.setDaemon(true);
                            return thread;
                        });
        timer.scheduleWithFixedDelay(
                AdaptiveBatching::adjustAll, PERIOD_MS, PERIOD_MS, TimeUnit.MILLISECONDS);
        logger.warn(
                "adaptive batching: the configured delay while requests queue, 0 after {} ms of an"
                        + " empty queue; each worker's batch its share of the queue",
                PERIOD_MS * QUIET_PERIODS);
    }

    /** One look at every model (the timer's only thread runs it: the maps need no lock). */
    static void adjustAll() {
        try {
            ModelManager models = ModelManager.getInstance();
            if (models == null) {
                return; // plugins load before TorchServe creates its model manager: nothing to look at yet
            }
            for (Map.Entry<String, ModelVersionedRefs> named : models.getAllModels()) {
                for (Map.Entry<String, Model> version : named.getValue().getAllVersions()) {
                    Model model = version.getValue();
                    adjust(model, models.getNumRunningWorkers(model.getModelVersionName()));
                }
            }
        } catch (RuntimeException e) {
            // a scheduled task that throws is never run again: report and keep looking
            logger.warn("adaptive batching: {}", e.toString());
        }
    }

    static void adjust(Model model, int workers) {
        Configured configured = CONFIGURED.computeIfAbsent(model, Configured::new);
        if (configured.batchSize <= 1) {
            return;
        }
        int pending = model.getPendingRequestsInJobQueue();
        if (configured.delay > 0) {
            int wanted;
            if (pending > 0) {
                QUIET.put(model, 0);
                wanted = configured.delay;
            } else {
                int quiet = QUIET.merge(model, 1, Integer::sum);
                wanted = quiet >= QUIET_PERIODS ? 0 : model.getMaxBatchDelay();
            }
            if (model.getMaxBatchDelay() != wanted) {
                model.setMaxBatchDelay(wanted);
            }
        }
        int share = share(pending, workers, configured.batchSize);
        int size = model.getBatchSize();
        // up at once; down only after QUIET_PERIODS looks in a row at a smaller share
        if (share >= size || SMALLER.merge(model, 1, Integer::sum) >= QUIET_PERIODS) {
            SMALLER.put(model, 0);
            size = share;
        }
        if (model.getBatchSize() != size) {
            model.setBatchSize(size);
        }
    }

    /** A worker's share of {@code pending} queued requests: between 1 and {@code most}. */
    static int share(int pending, int workers, int most) {
        int each = (pending + Math.max(1, workers) - 1) / Math.max(1, workers);
        return Math.max(1, Math.min(most, each));
    }
}
