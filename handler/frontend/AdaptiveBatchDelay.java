package mymodel.serving;

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
 * A batch delay only while requests queue: low latency at low load, full batches under load.
 *
 * <p>TorchServe 0.12's aggregator ({@code Model.pollBatch}) takes a worker's first job, then waits
 * up to {@code maxBatchDelay} for each further one. A lone request therefore always waits the
 * whole delay for company that does not come. With {@code maxBatchDelay 0} it stops after the
 * first extra job, so batches hold at most two. Jobs that are already queued are taken without
 * waiting whatever the delay, so the delay only buys anything when the queue empties during a
 * burst.
 *
 * <p>So this plugin looks at every model's job queue every {@value #PERIOD_MS} ms. It restores the
 * model's configured delay (model-config.yaml) as soon as a request waits in the queue. It sets
 * the delay to 0 once the queue has been empty at {@value #QUIET_PERIODS} looks in a row. The
 * management API's description shows the delay in force. A model whose batch size is 1, or whose
 * configured delay is 0, is left alone.
 *
 * <p>On with {@code adaptive_batch_delay=true} in config.properties, or {@code
 * TS_ADAPTIVE_BATCH_DELAY}. TorchServe loads it as an endpoint plugin ({@code plugins_path}):
 * instantiating the class starts the timer. It declares no endpoint.
 */
public class AdaptiveBatchDelay extends ModelServerEndpoint {

    static final String ENABLED_KEY = "adaptive_batch_delay";
    static final String ENABLED_ENV = "TS_ADAPTIVE_BATCH_DELAY";
    /** How often the queues are looked at. */
    static final long PERIOD_MS = 5;
    /** Looks in a row at an empty queue before the delay goes to 0 (100 ms). */
    static final int QUIET_PERIODS = 20;

    private static final Logger logger = LoggerFactory.getLogger(AdaptiveBatchDelay.class);
    private static final AtomicBoolean STARTED = new AtomicBoolean();
    /** Each model's configured delay, by model object (a re-registered model is a new one). */
    private static final Map<Model, Integer> CONFIGURED = new WeakHashMap<>();
    /** Each model's looks in a row at an empty queue. */
    private static final Map<Model, Integer> QUIET = new WeakHashMap<>();

    /** TorchServe instantiates plugins more than once while it scans them; start one timer. */
    public AdaptiveBatchDelay() {
        super();
        if (STARTED.compareAndSet(false, true)) {
            start();
        }
    }

    static boolean enabled() {
        String value = System.getenv(ENABLED_ENV);
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
                            Thread thread = new Thread(task, "adaptive-batch-delay");
                            thread.setDaemon(true);
                            return thread;
                        });
        timer.scheduleWithFixedDelay(
                AdaptiveBatchDelay::adjustAll, PERIOD_MS, PERIOD_MS, TimeUnit.MILLISECONDS);
        logger.warn(
                "adaptive batch delay: the configured delay while requests queue, 0 after {} ms"
                        + " of an empty queue",
                PERIOD_MS * QUIET_PERIODS);
    }

    /** One look at every model (the timer's only thread runs it: the maps need no lock). */
    static void adjustAll() {
        try {
            for (Map.Entry<String, ModelVersionedRefs> named :
                    ModelManager.getInstance().getAllModels()) {
                for (Map.Entry<String, Model> version : named.getValue().getAllVersions()) {
                    adjust(version.getValue());
                }
            }
        } catch (RuntimeException e) {
            // a scheduled task that throws is never run again: report and keep looking
            logger.warn("adaptive batch delay: {}", e.toString());
        }
    }

    static void adjust(Model model) {
        int configured = CONFIGURED.computeIfAbsent(model, Model::getMaxBatchDelay);
        if (configured <= 0 || model.getBatchSize() <= 1) {
            return;
        }
        int wanted;
        if (model.getPendingRequestsInJobQueue() > 0) {
            QUIET.put(model, 0);
            wanted = configured;
        } else {
            int quiet = QUIET.merge(model, 1, Integer::sum);
            wanted = quiet >= QUIET_PERIODS ? 0 : model.getMaxBatchDelay();
        }
        if (model.getMaxBatchDelay() != wanted) {
            model.setMaxBatchDelay(wanted);
        }
    }
}
