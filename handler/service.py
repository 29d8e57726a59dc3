"""The prediction service: a batch of requests in, one reply per request out, for any model the
exported schema describes (its name, target, fields and limits).

Pure logic: no I/O, no torch, no TorchServe. The handler gives it raw request bodies (with
their route: predictions, explanations, Open Inference Protocol v2) and the model's functions.
Each protocol reads its own requests (native.py, v2.py); this batching core runs every accepted
record of a batch through the model at once and gives each request its own reply. A bad request
is answered on its own and never fails the other requests TorchServe batched with it.
Python 3.9 compatible: it runs in the serving image's worker.
"""

import json
import logging
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

from .errors import Reply, RequestError, body_error, server_error
from .native import Body, NativeJson
from .records import ModelSchema, Row
from .v2 import OpenInference

# (categorical columns, numeric rows with NaN for missing) -> the target's probabilities
Predict = Callable[[List[List[str]], List[List[float]]], Sequence[float]]
# The same inputs -> per record {"probability", "baseline_probability", "logit", "baseline_logit",
# "attributions": {field: value}}: integrated gradients of the logit against a reference record.
Explain = Callable[[List[List[str]], List[List[float]]], List[Dict[str, Any]]]

# Routes: TorchServe's /predictions and /explanations, and the Open Inference Protocol v2
# routes that the frontend plugin (frontend/OpenInferenceProtocol.java) forwards.
PREDICT = "predict"
EXPLAIN = "explain"
V2_INFER = "v2_infer"
V2_METADATA = "v2_metadata"
UNREADABLE = "unreadable"  # a request the handler could not take apart: answered 500, alone
# Records per /explanations request unless the handler's config says otherwise: an explained
# record costs explain_steps forward and backward passes, so a full batch of such requests must
# stay well within TorchServe's responseTimeout and its 1 MiB response limit.
MAX_EXPLAINED_RECORDS = 100

log = logging.getLogger(__name__)


class Request(NamedTuple):
    body: Body
    content_type: Optional[str] = None
    route: str = PREDICT
    # Inference-Header-Content-Length as sent (or its value): v2 binary data follows the JSON
    json_length: Union[int, str, None] = None


class Batch(NamedTuple):
    replies: List[Reply]
    preprocess_seconds: float  # parsing, validation and model inputs
    inference_seconds: float  # the model's forward passes (and integrated gradients)


class Accepted(NamedTuple):
    """A request whose records the model will see."""

    place: int  # its index in the batch (a field named index would hide tuple.index)
    rows: List[Row]
    reply_body: Callable[[List[Any]], str]  # its records' results (probabilities or explanations) -> its reply


def route_of(url_path: Optional[str], explain: Optional[str]) -> str:
    """The route of a request from the headers TorchServe's frontend (or its v2 plugin) sets:
    url_path is "" for /predictions and /explanations, "v2/models/<name>[/versions/<v>][/infer]"
    for the Open Inference Protocol; explain is "True" for /explanations."""
    if url_path and url_path.startswith("v2/"):
        return V2_INFER if url_path.endswith("/infer") else V2_METADATA
    return EXPLAIN if explain == "True" else PREDICT


class PredictionService(ModelSchema):
    """Turns batched request bodies into replies, one per request, for the schema's model."""

    def __init__(
        self,
        schema: Dict[str, Any],
        predict: Predict,
        explain: Optional[Explain] = None,
        max_explained_records: int = MAX_EXPLAINED_RECORDS,
    ):
        super().__init__(schema)
        self.predict = predict
        self.explain = explain
        self.max_explained_records = max_explained_records
        self.native = NativeJson(self)
        self.v2 = OpenInference(self)

    def handle(self, requests: Sequence[Union[Request, Tuple[Any, ...]]]) -> List[Reply]:
        """requests: Request or (body, content type[, route, json length]) per request, in batch order."""
        return self.handle_batch(requests).replies

    def handle_batch(self, requests: Sequence[Union[Request, Tuple[Any, ...]]]) -> Batch:
        started = time.perf_counter()
        replies: List[Optional[Reply]] = [None] * len(requests)
        scored: List[Accepted] = []
        explained: List[Accepted] = []
        for index, request in enumerate(requests):
            request = request if isinstance(request, Request) else Request(*request)
            v2 = request.route in (V2_INFER, V2_METADATA)
            try:
                outcome = self.accept(index, request)
            except RequestError as error:
                replies[index] = error.reply(v2=v2)
                continue
            except Exception:  # noqa: BLE001 - a fault reading one request is that request's alone
                log.exception("request %d of a batch of %d could not be read", index, len(requests))
                replies[index] = server_error(500, "the server failed to read this request")
                continue
            if isinstance(outcome, Reply):
                replies[index] = outcome
            else:
                (explained if request.route == EXPLAIN else scored).append(outcome)
        preprocess, inference = time.perf_counter() - started, 0.0
        for accepted, answer in ((scored, self.answer_requests), (explained, self.explain_requests)):
            if not accepted:
                continue
            try:
                answered = answer(accepted)
            except Exception:  # noqa: BLE001 - whatever the model raised, neighbours must not share it
                # One request the model cannot take must not fail the others: retry them one by one.
                log.exception("a batch of %d requests failed in the model: answering them one by one", len(accepted))
                alone = [self.answer_alone(answer, one) for one in accepted]
                answered = Batch(
                    [one.replies[0] for one in alone],
                    sum(one.preprocess_seconds for one in alone),
                    sum(one.inference_seconds for one in alone),
                )
            preprocess += answered.preprocess_seconds
            inference += answered.inference_seconds
            for done, reply in zip(accepted, answered.replies):
                replies[done.place] = reply
        missing = [index for index, reply in enumerate(replies) if reply is None]
        if missing:  # every request must get its reply, in its place, or replies go to the wrong clients
            raise RuntimeError(f"no reply for the requests at {missing} of a batch of {len(requests)}")
        return Batch(cast(List[Reply], replies), preprocess, inference)

    def accept(self, index: int, request: Request) -> Union[Accepted, Reply]:
        """The request's rows and how to answer them, or its reply where it needs no model."""
        if request.route == V2_METADATA:
            return Reply(200, json.dumps(self.v2.metadata()))
        if request.route == V2_INFER:
            rows, reply_to = self.v2.parse(request.body, request.content_type, request.json_length)
            return Accepted(index, rows, lambda probabilities: self.v2.answer(probabilities, reply_to))
        if request.route in (PREDICT, EXPLAIN):
            rows, shape = self.native.parse(request.body, request.content_type)
            if request.route == EXPLAIN and len(rows) > self.max_explained_records:
                raise body_error(
                    f"{len(rows)} records in one explanation request; at most "
                    f"{self.max_explained_records} are explained at once",
                    status=413,
                    kind="too_many_records",
                )
            write = self.native.explained if request.route == EXPLAIN else self.native.answer
            return Accepted(index, rows, lambda results: write(results, shape))
        if request.route == UNREADABLE:
            return server_error(500, "the server failed to read this request")
        return server_error(404, f"unknown route {request.route!r}")

    def answer_requests(self, accepted: List[Accepted]) -> Batch:
        """One forward pass for every record of every accepted request; one reply per request."""
        started = time.perf_counter()
        categorical, numeric = self.model_inputs([row for request in accepted for row in request.rows])
        prepared = time.perf_counter()
        probabilities = [float(p) for p in self.predict(categorical, numeric)]
        replies, offset = [], 0
        for request in accepted:
            mine = probabilities[offset : offset + len(request.rows)]
            offset += len(request.rows)
            replies.append(Reply(200, request.reply_body(mine), tuple(mine)))
        return Batch(replies, prepared - started, time.perf_counter() - prepared)

    def explain_requests(self, accepted: List[Accepted]) -> Batch:
        """Integrated gradients for every record of every accepted /explanations request."""
        if self.explain is None:
            return Batch(
                [server_error(501, "explanations are not available for this model") for _ in accepted], 0.0, 0.0
            )
        started = time.perf_counter()
        categorical, numeric = self.model_inputs([row for request in accepted for row in request.rows])
        prepared = time.perf_counter()
        explanations = self.explain(categorical, numeric)
        replies, offset = [], 0
        for request in accepted:
            replies.append(Reply(200, request.reply_body(explanations[offset : offset + len(request.rows)])))
            offset += len(request.rows)
        return Batch(replies, prepared - started, time.perf_counter() - prepared)

    def answer_alone(self, answer: Callable[[List[Accepted]], Batch], request: Accepted) -> Batch:
        try:
            return answer([request])
        except Exception as error:  # noqa: BLE001 - reported to this request only
            log.exception("request %d failed in the model", request.place)
            reason = f"the model could not score this request ({type(error).__name__})"
            return Batch([server_error(500, reason)], 0.0, 0.0)
