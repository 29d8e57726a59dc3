"""TorchServe handler for a tabular model: JSON records in, <target>_probability out (the
model's name, target and fields come from its schema.json).

It moves bytes between TorchServe and PredictionService (service.py), which holds the request
logic, loads the forward (runtimes.py: model.pt in torch, or model.onnx in ONNX Runtime) and the
explanations (explanations.py), and writes the handler's Prometheus metrics and request log.
TorchServe loads it through the archive's entry module (torchserve_entry.py). Python 3.9
compatible: it runs in the image.
"""

import json
import logging
import math
import os
import socket
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import torch

from .errors import server_error
from .explanations import explanations_or_none
from .metrics import (
    INFERENCE_MS,
    INVALID_RECORDS,
    METRICS_LOG,
    MODEL_INFO,
    PREDICTIONS,
    PREPROCESS_MS,
    PROBABILITY_BINS,
    PROBABILITY_RECORDS,
    PROBABILITY_SUM,
    declared_metrics,
    metric_format,
    probability_bin,
)
from .request_log import REQUEST_ID_HEADER, RequestLog, client_request_id, log_serving
from .runtimes import forward
from .service import MAX_EXPLAINED_RECORDS, UNREADABLE, V2_INFER, Batch, PredictionService, Request, route_of

log = logging.getLogger(__name__)


class PredictionHandler:
    service: PredictionService  # built by initialize(), from the archive's schema.json

    def __init__(self) -> None:
        self.initialized = False
        self.model: Any = None
        self.metrics: Optional[Dict[str, Any]] = None
        self.hostname = socket.gethostname()
        self.line_formats: Dict[Tuple[str, Tuple[str, ...]], str] = {}
        self.requests_log: Optional[RequestLog] = None
        self.runtime = "torchscript"

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        options: Dict[str, Any] = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        # One intra-op thread per worker: the workers themselves use the cores.
        threads = int(options.get("torch_threads", 1))
        torch.set_num_threads(threads)
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu").eval()
        with open(os.path.join(model_dir, "schema.json")) as handle:
            schema = json.load(handle)
        self.runtime = str(options.get("runtime", "torchscript"))
        self.service = PredictionService(
            schema,
            forward(self.runtime, self.model, model_dir, schema["x-model"], threads),
            max_explained_records=int(options.get("max_explained_records", MAX_EXPLAINED_RECORDS)),
        )
        self.service.explain = explanations_or_none(self.model, self.service, int(options.get("explain_steps", 64)))
        # TorchScript optimizes a graph on its first calls: pay that before the first request.
        example = json.dumps(self.service.example())
        for _ in range(3):
            self.service.handle([(example, "application/json")])
        # handler.metrics false: none of the handler's own metrics (TorchServe's stay)
        self.metrics = declared_metrics(getattr(context, "metrics", None)) if options.get("metrics", True) else None
        # The worker logs a line per request at INFO; warnings and errors still get through (and
        # TorchServe's own per-batch PredictionTime stays off). The handler's metric lines are log
        # records too, which TorchServe reads from the worker's output: they stay on.
        logging.getLogger().setLevel(options.get("log_level", "WARNING"))
        METRICS_LOG.setLevel(logging.INFO)
        self.requests_log = RequestLog(self.service.name, self.service.version)
        self.initialized = True
        log_serving(self.service.name, self.service.version)
        if self.metrics:
            self.observe([(MODEL_INFO, 1, (self.service.name, self.service.version))])

    def handle(self, data: List[Dict[str, Any]], context: Any) -> List[str]:
        """One reply per request, whatever fails: an exception escaping here would make TorchServe
        answer 503 to every request of the batch, other clients' included."""
        started = time.perf_counter()
        requests = [request_of(index, parameters, context) for index, parameters in enumerate(data)]
        try:
            batch = self.service.handle_batch([request for request, _ in requests])
        except Exception:  # noqa: BLE001 - a fault of the service itself: each request gets a 500
            log.exception("a batch of %d requests failed", len(requests))
            batch = Batch([server_error(500, "the server failed to answer this request") for _ in requests], 0, 0)
        for index, reply in enumerate(batch.replies):
            context.set_response_status(reply.status, "", index)
            context.set_response_content_type(index, "application/json")
        try:  # the replies are made: metrics and log lines must not undo them
            if self.metrics:
                self.record(batch)
            if self.requests_log:
                log_requests(self.requests_log, requests, batch, (time.perf_counter() - started) * 1000)
        except Exception:  # noqa: BLE001
            log.exception("the metrics or request log of a batch could not be written")
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
        observations: List[Tuple[str, float, Tuple[str, ...]]] = [
            (PREDICTIONS, count, (name, target, predicted))
            for predicted, count in (("true", positive), ("false", len(scored) - positive))
            if count
        ]
        if scored:
            bins = Counter(probability_bin(p) for p in scored)
            observations += [
                (PROBABILITY_RECORDS, count, (name, target, PROBABILITY_BINS[index]))
                for index, count in sorted(bins.items())
            ]
            observations.append((PROBABILITY_SUM, math.fsum(scored), (name, target)))
        refused = Counter(kind for reply in batch.replies for kind in reply.refused)
        observations += [(INVALID_RECORDS, count, (name, reason)) for reason, count in refused.items()]
        observations.append((PREPROCESS_MS, batch.preprocess_seconds * 1000, (name,)))
        if batch.inference_seconds:  # a batch of refusals and metadata only runs no model
            observations.append((INFERENCE_MS, batch.inference_seconds * 1000, (name,)))
        self.observe(observations)

    def observe(self, observations: List[Tuple[str, float, Tuple[str, ...]]]) -> None:
        """(metric, value, label values) as metric lines in one log record."""
        stamp = f"{self.hostname},{int(time.time())}"
        METRICS_LOG.info(
            "\n".join(
                self.line_format(metric, dimensions) % (value, stamp) for metric, value, dimensions in observations
            )
        )

    def line_format(self, metric: str, dimensions: Tuple[str, ...]) -> str:
        key = (metric, dimensions)
        if key not in self.line_formats:  # a few metrics times a few label values
            assert self.metrics is not None  # only a handler with metrics on observes
            self.line_formats[key] = metric_format(self.metrics[metric], dimensions)
        return self.line_formats[key]


def request_of(index: int, parameters: Any, context: Any) -> Tuple[Request, Tuple[str, str]]:
    """One request of a batch, and its ids: the one the client gets back in X-Request-ID (set by
    TorchServe's frontend or the v2 plugin) and the client's own."""
    try:
        headers = context.get_all_request_header(index) or {}
        ids = (context.get_request_id(index) or "", _header(headers, REQUEST_ID_HEADER))
        # TorchServe's frontend sets url_path and explain (the v2 plugin sets url_path "v2/...").
        route = route_of(headers.get("url_path"), headers.get("explain"))
        length = _header(headers, "inference-header-content-length") if route == V2_INFER else ""
        body = parameters.get("body", parameters.get("data"))
        return Request(body, _header(headers, "content-type"), route, length or None), ids
    except Exception:  # noqa: BLE001 - answered 500 by the service, alone
        log.exception("request %d of a batch could not be read", index)
        return Request(None, None, UNREADABLE), ("", "")


def log_requests(
    log_of: RequestLog, requests: List[Tuple[Request, Tuple[str, str]]], batch: Batch, milliseconds: float
) -> None:
    """A request-log line per request the log's level takes."""
    for (request, (identifier, client_id)), reply in zip(requests, batch.replies):
        if not log_of.enabled_for(reply.status):
            continue
        error = json.loads(reply.body).get("error") if reply.status >= 400 else None
        log_of.write(
            identifier,
            request.route,
            reply.status,
            milliseconds,
            len(reply.scored),
            reply.fields,
            error,
            client_request_id(client_id),
        )


def _header(headers: Dict[str, Any], name: str) -> str:
    """A request header by lower-case name ("" when absent). Request parameters share this map
    with dict values; HTTP headers have string values."""
    for key, value in headers.items():
        if isinstance(value, str) and key.lower() == name:
            return value
    return ""
