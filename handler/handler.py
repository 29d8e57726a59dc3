"""TorchServe handler for a tabular model: JSON records in, <target>_probability out (the
model's name, target and fields come from its schema.json).

It moves bytes between TorchServe and PredictionService (service.py), which holds
the request logic, and adds what needs torch: the forward pass, integrated
gradients for /explanations, and the handler's Prometheus metrics. TorchServe
loads it through the archive's entry module (entry.py). Python 3.9 compatible:
it runs in the image.
"""

import importlib
import importlib.util
import json
import logging
import math
import os
import socket
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import torch

from .request_log import REQUEST_ID_HEADER, RequestLog, client_request_id
from .service import V2_INFER, Batch, PredictionService, Request, route_of

log = logging.getLogger(__name__)
# The handler's metric lines (TorchServe's own metrics log under "ts.metrics").
METRICS_LOG = logging.getLogger("ts.metrics.handler")

# Declared in handler/metrics.yaml (metrics_config): with metrics_mode=prometheus, TorchServe
# serves only declared metrics.
PREDICTIONS = "model_predictions_total"
INVALID_RECORDS = "model_invalid_records_total"
PROBABILITY_RECORDS = "model_probability_records_total"
PROBABILITY_SUM = "model_probability_sum_total"
PREPROCESS_MS = "model_preprocess_milliseconds"
INFERENCE_MS = "model_inference_milliseconds"
# The probability's distribution as counts of records per bin of this width, labelled by the
# bin's lower edge ("0.00", "0.05", ..., "0.95"; the last bin holds 1.0 too): a batch adds one
# line per bin its records fall in, not one per record.
PROBABILITY_BIN_WIDTH = 0.05
PROBABILITY_BINS = tuple(f"{index * PROBABILITY_BIN_WIDTH:.2f}" for index in range(round(1 / PROBABILITY_BIN_WIDTH)))


class PredictionHandler:
    service: PredictionService  # built by initialize(), from the archive's schema.json

    def __init__(self) -> None:
        self.initialized = False
        self.model: Any = None
        self.columns: Dict[str, List[int]] = {}
        self.reference: Any = None
        self.steps = 0
        self.metrics: Optional[Dict[str, Any]] = None
        self.hostname = socket.gethostname()
        self.line_formats: Dict[Tuple[str, Tuple[str, ...]], str] = {}
        self.requests_log: Optional[RequestLog] = None

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        options: Dict[str, Any] = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        # One intra-op thread per worker: the workers themselves use the cores.
        torch.set_num_threads(int(options.get("torch_threads", 1)))
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu").eval()
        with open(os.path.join(model_dir, "schema.json")) as handle:
            schema = json.load(handle)
        self.steps = int(options.get("explain_steps", 64))
        self.service = PredictionService(schema, self.predict)
        self.service.explain = self.explanations_or_none()
        # TorchScript optimizes a graph on its first calls: pay that before the first request.
        example = json.dumps(self.service.example())
        for _ in range(3):
            self.service.handle([(example, "application/json")])
        # handler.metrics false: none of the handler's own metrics (TorchServe's stay)
        self.metrics = _declared_metrics(getattr(context, "metrics", None)) if options.get("metrics", True) else None
        # The worker logs a line per request at INFO; warnings and errors still get through (and
        # TorchServe's own per-batch PredictionTime stays off). The handler's metric lines are log
        # records too, which TorchServe reads from the worker's output: they stay on.
        logging.getLogger().setLevel(options.get("log_level", "WARNING"))
        METRICS_LOG.setLevel(logging.INFO)
        self.requests_log = RequestLog(self.service.name, self.service.version)
        self.initialized = True
        log.info("loaded %s version %s", schema["x-model"]["name"], self.service.version)

    @torch.inference_mode()
    def predict(self, categorical: List[List[str]], numeric: List[List[float]]) -> List[float]:
        return self.model(categorical, self.numeric_tensor(numeric)).tolist()

    def numeric_tensor(self, numeric: List[List[float]]) -> torch.Tensor:
        """The numeric rows as the model's float tensor, [records, numeric fields] even for none."""
        return torch.tensor(numeric, dtype=torch.float32).reshape(len(numeric), len(self.service.numeric))

    def handle(self, data: List[Dict[str, Any]], context: Any) -> List[str]:
        started = time.perf_counter()
        requests, ids = [], []
        for index, parameters in enumerate(data):
            headers = context.get_all_request_header(index)
            # the id the client gets back in X-Request-ID (set by TorchServe's frontend or the v2 plugin)
            ids.append((context.get_request_id(index) or "", _header(headers, REQUEST_ID_HEADER)))
            # TorchServe's frontend sets url_path and explain (the v2 plugin sets url_path "v2/...").
            route = route_of(headers.get("url_path"), headers.get("explain"))
            length = _header(headers, "inference-header-content-length") if route == V2_INFER else ""
            requests.append(Request(parameters.get("body", parameters.get("data")), _header(headers, "content-type"),
                                    route, int(length) if length.isdigit() else None))
        batch = self.service.handle_batch(requests)
        for index, reply in enumerate(batch.replies):
            context.set_response_status(reply.status, "", index)
            context.set_response_content_type(index, "application/json")
        if self.metrics:
            self.record(batch)
        if self.requests_log:
            log_requests(self.requests_log, requests, ids, batch, (time.perf_counter() - started) * 1000)
        return [reply.body for reply in batch.replies]

    def record(self, batch: Batch) -> None:
        """The batch's outcomes, refusals, probabilities and times as the declared metrics, in one
        log record. TorchServe's frontend reads metric lines from the worker's output one by one,
        and one logging call per observation (TorchServe's CachingMetric.add_or_update) costs about
        as much as predicting a record. So a batch writes a line per outcome, reason and
        probability bin, with the counts as values, never a line per record."""
        name, target = self.service.name, self.service.target
        scored = [p for reply in batch.replies for p in reply.scored]
        positive = sum(p >= self.service.threshold for p in scored)
        observations = [(PREDICTIONS, count, (name, target, predicted))
                        for predicted, count in (("true", positive), ("false", len(scored) - positive)) if count]
        if scored:
            bins = Counter(probability_bin(p) for p in scored)
            observations += [(PROBABILITY_RECORDS, count, (name, target, PROBABILITY_BINS[index]))
                             for index, count in sorted(bins.items())]
            observations.append((PROBABILITY_SUM, math.fsum(scored), (name, target)))
        refused = Counter(kind for reply in batch.replies for kind in reply.refused)
        observations += [(INVALID_RECORDS, count, (name, reason)) for reason, count in refused.items()]
        observations.append((PREPROCESS_MS, batch.preprocess_seconds * 1000, (name,)))
        if batch.inference_seconds:  # a batch of refusals and metadata only runs no model
            observations.append((INFERENCE_MS, batch.inference_seconds * 1000, (name,)))
        stamp = f"{self.hostname},{int(time.time())}"
        METRICS_LOG.info("\n".join(self.line_format(metric, dimensions) % (value, stamp)
                                   for metric, value, dimensions in observations))

    def line_format(self, metric: str, dimensions: Tuple[str, ...]) -> str:
        key = (metric, dimensions)
        if key not in self.line_formats:  # a few metrics times a few label values
            self.line_formats[key] = metric_format((self.metrics or {})[metric], dimensions)
        return self.line_formats[key]

    # -- explanations ---------------------------------------------------------------------------

    def explanations_or_none(self) -> Any:
        """self.explain when this model and environment can explain, else None (explanations answer 501).
        captum is imported on the first explanation: it brings matplotlib, about 30 MiB per worker
        that serves only predictions would carry for nothing."""
        if importlib.util.find_spec("captum") is None:
            log.warning("captum is not installed: /explanations answers 501")
            return None
        # Which first-layer inputs carry each request field: exported with model.pt (field_columns).
        self.columns = {name: list(positions) for name, positions in self.model.field_columns.items()}
        categorical, numeric = self.service.model_inputs(self.service.rows([self.service.example()]))
        indices, _ = self.tensors(categorical, numeric)
        with torch.no_grad():
            # The reference record: every number at its training fill value, every category unknown.
            reference = (torch.full_like(indices, int(self.model.unknown)), self.model.fill.unsqueeze(0).clone())
            self.reference = self.model.features(*reference)
        return self.explain

    def tensors(self, categorical: List[List[str]], numeric: List[List[float]]) -> Any:
        return self.model.category_indices(categorical, len(numeric)), self.numeric_tensor(numeric)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The logit of the target's probability, from the first layer's input."""
        return self.model.mlp(features).squeeze(1)

    def explain(self, categorical: List[List[str]], numeric: List[List[float]]) -> List[Dict[str, Any]]:
        """Integrated gradients of the logit, in the space the MLP's first layer sees (scaled numbers,
        sine/cosine of periodic ones, missing indicators, category embeddings), from the reference
        record to each record, summed back to the request fields; as model/analysis/interpret.py does offline."""
        indices, values = self.tensors(categorical, numeric)
        with torch.no_grad():
            features = self.model.features(indices, values)
            logits = self.head(features)
            reference_logit = float(self.head(self.reference)[0])
        integrated_gradients = importlib.import_module("captum.attr").IntegratedGradients
        attributions = integrated_gradients(self.head).attribute(
            features, baselines=self.reference.expand_as(features), n_steps=self.steps,
            internal_batch_size=max(self.steps, 4096))
        per_field = {name: attributions[:, positions].sum(1).tolist() for name, positions in self.columns.items()}
        return [{"probability": _sigmoid(float(logit)), "logit": float(logit),
                 "baseline_probability": _sigmoid(reference_logit), "baseline_logit": reference_logit,
                 "attributions": {name: column[row] for name, column in per_field.items()}}
                for row, logit in enumerate(logits.tolist())]


def log_requests(log_of: RequestLog, requests: List[Request], ids: List[Tuple[str, str]], batch: Batch,
                 milliseconds: float) -> None:
    """A request-log line per request the log's level takes."""
    for request, (identifier, client_id), reply in zip(requests, ids, batch.replies):
        if not log_of.enabled_for(reply.status):
            continue
        error = json.loads(reply.body).get("error") if reply.status >= 400 else None
        log_of.write(identifier, request.route, reply.status, milliseconds, len(reply.scored), reply.fields,
                     error, client_request_id(client_id))


def probability_bin(probability: float) -> int:
    """The index in PROBABILITY_BINS of a probability's bin."""
    return min(int(probability * len(PROBABILITY_BINS)), len(PROBABILITY_BINS) - 1)


def metric_format(metric: Any, dimensions: Tuple[str, ...]) -> str:
    """The %-format (value, "host,time") of one observation of a declared metric as TorchServe's
    worker writes it (ts/metrics/caching_metric.py, emit_metrics)."""
    named = ",".join(f"{dimension}:{label}" for dimension, label in zip(metric.dimension_names, dimensions))
    return f"[METRICS]{metric.metric_name}.{metric.unit}:%s|#{named}|#type:{metric.metric_type.name}|#hostname:%s"


def _declared_metrics(metrics: Any) -> Optional[Dict[str, Any]]:
    """The handler's metrics from TorchServe's metrics cache, or None where they are not declared
    (a server started with another metrics_config, or no TorchServe at all)."""
    if metrics is None:
        return None
    from ts.metrics.metric_type_enum import MetricTypes

    wanted = {PREDICTIONS: MetricTypes.COUNTER, INVALID_RECORDS: MetricTypes.COUNTER,
              PROBABILITY_RECORDS: MetricTypes.COUNTER, PROBABILITY_SUM: MetricTypes.COUNTER,
              PREPROCESS_MS: MetricTypes.HISTOGRAM, INFERENCE_MS: MetricTypes.HISTOGRAM}
    try:
        return {name: metrics.get_metric(name, kind) for name, kind in wanted.items()}
    except Exception as error:  # noqa: BLE001 - TorchServe's MetricsCacheKeyError: serve without them
        log.warning("handler metrics are off: %s", error)
        return None


def _header(headers: Dict[str, Any], name: str) -> str:
    """A request header by lower-case name ("" when absent). Request parameters share this map
    with dict values; HTTP headers have string values."""
    for key, value in headers.items():
        if isinstance(value, str) and key.lower() == name:
            return value
    return ""


def _sigmoid(logit: float) -> float:
    return 1 / (1 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1 + math.exp(logit))
