"""The handler's Prometheus metrics as TorchServe's worker writes metric lines: declared in
handler/metrics.yaml (metrics_config), since with metrics_mode=prometheus TorchServe serves only
declared metrics. Python 3.9 compatible: it runs in the serving image's worker.
"""

import logging
from typing import Any, Dict, Optional, Tuple

log = logging.getLogger(__name__)
# The handler's metric lines (TorchServe's own metrics log under "ts.metrics").
METRICS_LOG = logging.getLogger("ts.metrics.handler")

PREDICTIONS = "model_predictions_total"
INVALID_RECORDS = "model_invalid_records_total"
PROBABILITY_RECORDS = "model_probability_records_total"
PROBABILITY_SUM = "model_probability_sum_total"
PREPROCESS_MS = "model_preprocess_milliseconds"
INFERENCE_MS = "model_inference_milliseconds"
MODEL_INFO = "model_info"  # 1, labelled with the model's name and the version this worker serves
# The probability's distribution as counts of records per bin of this width, labelled by the
# bin's lower edge ("0.00", "0.05", ..., "0.95"; the last bin holds 1.0 too): a batch adds one
# line per bin its records fall in, not one per record.
PROBABILITY_BIN_WIDTH = 0.05
PROBABILITY_BINS = tuple(f"{index * PROBABILITY_BIN_WIDTH:.2f}" for index in range(round(1 / PROBABILITY_BIN_WIDTH)))


def probability_bin(probability: float) -> int:
    """The index in PROBABILITY_BINS of a probability's bin."""
    return min(int(probability * len(PROBABILITY_BINS)), len(PROBABILITY_BINS) - 1)


def metric_format(metric: Any, dimensions: Tuple[str, ...]) -> str:
    """The %-format (value, "host,time") of one observation of a declared metric as TorchServe's
    worker writes it (ts/metrics/caching_metric.py, emit_metrics)."""
    named = ",".join(f"{dimension}:{label}" for dimension, label in zip(metric.dimension_names, dimensions))
    return f"[METRICS]{metric.metric_name}.{metric.unit}:%s|#{named}|#type:{metric.metric_type.name}|#hostname:%s"


def declared_metrics(metrics: Any) -> Optional[Dict[str, Any]]:
    """The handler's metrics from TorchServe's metrics cache, or None where they are not declared
    (a server started with another metrics_config, or no TorchServe at all)."""
    if metrics is None:
        return None
    from ts.metrics.metric_type_enum import MetricTypes

    wanted = {
        PREDICTIONS: MetricTypes.COUNTER,
        INVALID_RECORDS: MetricTypes.COUNTER,
        PROBABILITY_RECORDS: MetricTypes.COUNTER,
        PROBABILITY_SUM: MetricTypes.COUNTER,
        PREPROCESS_MS: MetricTypes.HISTOGRAM,
        INFERENCE_MS: MetricTypes.HISTOGRAM,
        MODEL_INFO: MetricTypes.GAUGE,
    }
    try:
        return {name: metrics.get_metric(name, kind) for name, kind in wanted.items()}
    except Exception as error:  # noqa: BLE001 - TorchServe's MetricsCacheKeyError: serve without them
        log.warning("handler metrics are off: %s", error)
        return None
