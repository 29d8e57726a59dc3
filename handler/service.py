"""The prediction service: request parsing, validation and response shaping for any model
the exported schema describes (its name, target, fields and limits).

Pure logic: no I/O, no torch, no TorchServe. The handler gives it raw request
bodies (with their route: predictions, explanations, Open Inference Protocol v2)
and the model's functions; it gives back one reply per request. A bad request is
answered on its own and never fails the other requests TorchServe batched with it.
Python 3.9 compatible: it runs in the serving image's worker.
"""

import itertools
import json
import math
import struct
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from jsonschema import Draft202012Validator

try:  # in the worker the archive's modules sit side by side; in a checkout they are the handler package
    from typed_records import ABSENT, INSTANCES, TypedRecords, encode
except ImportError:
    from handler.typed_records import ABSENT, INSTANCES, TypedRecords, encode

Body = Union[bytes, bytearray, str, dict, list, None]
Row = Tuple[Any, ...]  # a record's values in the order of the model's fields (see PredictionService.parse)
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

JSON_TYPES = ("application/json", "text/json", "text/plain", "application/octet-stream", "")
# An error reply lists at most this many problems: TorchServe kills the worker whose reply is over
# max_response_size (1 MiB), and a 1,000-record request can hold 16,000 problems.
MAX_REPORTED_PROBLEMS = 50
JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
              float: "a number", type(None): "null"}

# Open Inference Protocol tensor types: what each kind of field accepts, and the struct format of
# one element in the binary-data extension (little-endian).
V2_BINARY_FORMATS = {"INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
                     "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d"}
V2_INTEGERS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
V2_NUMBERS = ("FP64", "FP32") + V2_INTEGERS
V2_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")


class Problem(NamedTuple):
    record: Optional[int]  # the record's (v2: the element's) index; None for the body or one record
    field: str
    reason: str
    kind: str  # a fixed label (see problem_kind) that the handler's metrics count refusals by


class Reply(NamedTuple):
    status: int
    body: str  # JSON text
    scored: Tuple[float, ...] = ()  # probabilities of the records predicted (predictions and v2 infer)
    refused: Tuple[str, ...] = ()  # problem kinds: one per refused record and kind (or per refused body)
    fields: Tuple[str, ...] = ()  # the fields (v2: inputs) a refused request was refused for, in order


class Batch(NamedTuple):
    replies: List[Reply]
    preprocess_seconds: float  # parsing, validation and model inputs
    inference_seconds: float  # the model's forward passes (and integrated gradients)


class Request(NamedTuple):
    body: Body
    content_type: Optional[str] = None
    route: str = PREDICT
    json_length: Optional[int] = None  # Inference-Header-Content-Length: v2 binary data follows the JSON


class RequestError(Exception):
    """Refuses one request with its problems."""

    def __init__(self, status: int, problems: List[Problem]):
        super().__init__(problems[0].reason)
        self.status = status
        self.problems = problems

    def summary(self, v2: bool = False) -> str:
        first = self.problems[0]
        if v2:
            where = f"input '{first.field}'" if first.field != "body" else "body"
            where += "" if first.record is None else f", element {first.record}"
        else:
            where = f"field '{first.field}'" if first.record is None else \
                f"record {first.record}, field '{first.field}'"
        text = f"{where}: {first.reason}"
        if len(self.problems) > 1:
            text += " (and {} more problem{})".format(len(self.problems) - 1, "s" if len(self.problems) > 2 else "")
        return text

    def refused(self) -> Tuple[str, ...]:
        """One kind per refused record and kind; problems of the body or of a lone record count once."""
        return tuple(sorted(kind for _, kind in {(problem.record, problem.kind) for problem in self.problems}))

    def fields(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(problem.field for problem in self.problems))

    def reply(self, v2: bool = False) -> Reply:
        if v2:  # the protocol's error object is {"error": message}
            return Reply(self.status, json.dumps({"error": self.summary(v2=True)}), refused=self.refused(),
                         fields=self.fields())
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        errors = [{"record": p.record, "field": p.field, "reason": p.reason} for p in shown]
        reply: Dict[str, Any] = {"code": self.status, "error": self.summary(), "errors": errors}
        if len(self.problems) > len(shown):
            reply["errors_omitted"] = len(self.problems) - len(shown)
        return Reply(self.status, json.dumps(reply), refused=self.refused(), fields=self.fields())


def _body_error(reason: str, status: int = 400, kind: str = "body") -> RequestError:
    return RequestError(status, [Problem(None, "body", reason, kind)])


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    record: Dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"field '{key[:64]}' appears more than once")
        record[key] = value
    return record


def parse_json(body: Body) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicated keys, finite numbers."""
    if isinstance(body, (dict, list)):  # already decoded upstream
        return body
    if body is None:
        raise _body_error("the request has no body; send a JSON object or a list of objects")
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise _body_error(f"the body is not valid UTF-8 (byte {error.start})") from None
    text = body.lstrip("\ufeff")
    if not text.strip():
        raise _body_error("the body is empty; send a JSON object or a list of objects")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _body_error("the body is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError is a ValueError; so are our refusals
        raise _body_error(f"the body is not valid JSON: {str(error)[:200]}") from None


def route_of(url_path: Optional[str], explain: Optional[str]) -> str:
    """The route of a request from the headers TorchServe's frontend (or its v2 plugin) sets:
    url_path is "" for /predictions and /explanations, "v2/models/<name>[/versions/<v>][/infer]"
    for the Open Inference Protocol; explain is "True" for /explanations."""
    if url_path and url_path.startswith("v2/"):
        return V2_INFER if url_path.endswith("/infer") else V2_METADATA
    return EXPLAIN if explain == "True" else PREDICT


class PredictionService:
    """Turns batched request bodies into replies, one per request, for the schema's model."""

    def __init__(self, schema: Dict[str, Any], predict: Predict, explain: Optional[Explain] = None):
        Draft202012Validator.check_schema(schema)
        self.validator = Draft202012Validator(schema)
        self.fields: Dict[str, Dict[str, Any]] = schema["properties"]
        facts = schema["x-model"]
        self.name: str = facts["name"]
        self.categorical: List[str] = facts["categorical"]
        self.numeric: List[str] = facts["numeric"]
        self.version: str = facts["version"]
        # Answers are {"<target>_probability": p, "<target>": p >= threshold, "model_version": ...}
        self.target: str = facts["target"]
        self.threshold: float = facts["threshold"]
        self.max_records: int = facts["max_records"]
        # The same schema as msgspec types: decodes and checks a body of valid records in C (the
        # common case); the validator above only runs to word what is wrong.
        self.typed = TypedRecords(schema, self.categorical + self.numeric, self.max_records)
        self.predict = predict
        self.explain = explain
        self.v2_inputs = {name: _v2_datatypes(self.fields[name], name in self.categorical)
                          for name in self.categorical + self.numeric}
        self.v2_outputs = {f"{self.target}_probability": "FP64", self.target: "BOOL"}
        self._timing = [0.0, 0.0]  # preprocess, inference seconds of the batch being handled

    # -- batches -----------------------------------------------------------------------------

    def handle(self, requests: Sequence[Union[Request, Tuple[Any, ...]]]) -> List[Reply]:
        """requests: Request or (body, content type[, route, json length]) per request, in batch order."""
        return self.handle_batch(requests).replies

    def handle_batch(self, requests: Sequence[Union[Request, Tuple[Any, ...]]]) -> Batch:
        started = time.perf_counter()
        self._timing = [0.0, 0.0]
        replies: List[Optional[Reply]] = [None] * len(requests)
        scored: List[Tuple[int, List[Row], Any]] = []  # index, rows, how to answer
        explained: List[Tuple[int, List[Row], Any]] = []
        for index, request in enumerate(requests):
            if not isinstance(request, Request):
                request = Request(*request)
            v2 = request.route in (V2_INFER, V2_METADATA)
            try:
                if request.route == V2_METADATA:
                    replies[index] = Reply(200, json.dumps(self.v2_metadata()))
                elif request.route == V2_INFER:
                    records, reply_to = self.parse_v2(request)
                    scored.append((index, records, reply_to))
                elif request.route in (PREDICT, EXPLAIN):
                    records, as_list = self.parse(request.body, request.content_type)
                    (explained if request.route == EXPLAIN else scored).append((index, records, as_list))
                else:
                    replies[index] = Reply(404, json.dumps({"error": f"unknown route {request.route!r}"}))
            except RequestError as error:
                replies[index] = error.reply(v2=v2)
        self._timing[0] += time.perf_counter() - started
        for accepted, answer in ((scored, self.answer_requests), (explained, self.explain_requests)):
            if not accepted:
                continue
            try:
                answered = answer(accepted)
            except Exception:  # noqa: BLE001 - whatever the model raised, neighbours must not share it
                # One request the model cannot take must not fail the others: retry them one by one.
                answered = [self.answer_alone(answer, request) for request in accepted]
            for (index, _, _), reply in zip(accepted, answered):
                replies[index] = reply
        return Batch([reply for reply in replies if reply is not None], *self._timing)

    def answer_requests(self, accepted: List[Tuple[int, List[Row], Any]]) -> List[Reply]:
        """One forward pass for every record of every accepted request; one reply per request."""
        everything = [record for _, records, _ in accepted for record in records]
        started = time.perf_counter()
        categorical, numeric = self.model_inputs(everything)
        prepared = time.perf_counter()
        probabilities = [float(p) for p in self.predict(categorical, numeric)]
        self._timing[0] += prepared - started
        self._timing[1] += time.perf_counter() - prepared
        replies, offset = [], 0
        for _, records, reply_to in accepted:
            batch = probabilities[offset:offset + len(records)]
            offset += len(records)
            if isinstance(reply_to, V2Reply):
                body = self.v2_answer(batch, reply_to)
            else:
                body = encode(shaped([self.answer(p) for p in batch], reply_to))
            replies.append(Reply(200, body, tuple(batch)))
        return replies

    def explain_requests(self, accepted: List[Tuple[int, List[Row], Any]]) -> List[Reply]:
        """Integrated gradients for every record of every accepted /explanations request."""
        if self.explain is None:
            body = json.dumps({"code": 501, "error": "explanations are not available for this model", "errors": []})
            return [Reply(501, body) for _ in accepted]
        everything = [record for _, records, _ in accepted for record in records]
        started = time.perf_counter()
        categorical, numeric = self.model_inputs(everything)
        prepared = time.perf_counter()
        explanations = self.explain(categorical, numeric)
        self._timing[0] += prepared - started
        self._timing[1] += time.perf_counter() - prepared
        replies, offset = [], 0
        for _, records, as_list in accepted:
            answers = [self.explanation(e) for e in explanations[offset:offset + len(records)]]
            offset += len(records)
            replies.append(Reply(200, json.dumps(shaped(answers, as_list))))
        return replies

    def answer_alone(self, answer: Callable[[List[Any]], List[Reply]], request: Tuple[int, Any, Any]) -> Reply:
        try:
            return answer([request])[0]
        except Exception as error:  # noqa: BLE001 - reported to this request only
            reason = f"the model could not score this request ({type(error).__name__})"
            if isinstance(request[2], V2Reply):
                return Reply(500, json.dumps({"error": reason}))
            return Reply(500, json.dumps({"code": 500, "error": reason, "errors": []}))

    # -- the native JSON API -------------------------------------------------------------------

    def parse(self, body: Body, content_type: Optional[str]) -> Tuple[List[Row], Any]:
        """The records as rows (a tuple per record in the order of the model's fields, None or
        ABSENT where a value is missing), and the shape the answer takes: False (one object),
        True (a list) or INSTANCES (KServe's v1 body {"instances": [...]}, answered
        {"predictions": [...]})."""
        _check_media_type(content_type)
        reading = self.typed.read(body)
        if reading is not None:  # the common case: well-formed and valid, decided in C
            return reading
        # Anything else is read again the strict way, which words what is wrong.
        records, as_list = self.records_of(parse_json(body))
        problems: List[Problem] = []
        for index, record in enumerate(records):
            problems.extend(Problem(index if as_list else None, *problem) for problem in self.problems(record))
        if problems:
            raise RequestError(400, problems)
        return self.rows(records), as_list

    def records_of(self, payload: Any) -> Tuple[List[Any], Any]:
        """The records of a decoded body and the shape of its answer (see parse)."""
        as_list: Any = isinstance(payload, list)
        if isinstance(payload, dict) and list(payload) == [INSTANCES] and isinstance(payload[INSTANCES], list):
            payload, as_list = payload[INSTANCES], INSTANCES  # no record has a field of that name
        records = payload if as_list else [payload]
        if not isinstance(payload, (dict, list)):
            raise _body_error(f"the body must be a JSON object or a list of objects, not {_json_name(payload)}")
        if not records:
            raise _body_error("the list of records is empty")
        if len(records) > self.max_records:
            raise _body_error(f"{len(records)} records in one request; at most {self.max_records} are accepted",
                              status=413, kind="too_many_records")
        return records, as_list

    def problems(self, record: Any) -> List[Tuple[str, str, str]]:
        """(field, reason, kind) for everything wrong with one record."""
        if not isinstance(record, dict):
            return [("record", f"must be a JSON object, not {_json_name(record)}", "not_an_object")]
        found = [(name, "holds an unpaired UTF-16 surrogate (such as \\ud800), which is not text", "not_text")
                 for name in self.categorical if isinstance(record.get(name), str) and not _is_text(record[name])]
        if self.typed.is_valid(record):
            return found
        for name in record:
            if name not in self.fields:
                found.append((name[:64], "is not a known field; known fields are " + ", ".join(self.fields),
                              "unknown_field"))
        for name in self.validator.schema["required"]:
            if name not in record:
                found.append((name, "is required but missing", "missing_field"))
        for error in self.validator.iter_errors(record):
            if error.path:  # required / additionalProperties are reported above
                found.append((str(error.path[0]), self.reason(error), problem_kind(error.validator)))
        return found

    def reason(self, error: Any) -> str:
        value = error.instance
        rule = error.validator
        if rule == "type":
            expected = error.validator_value
            expected = [expected] if isinstance(expected, str) else expected
            wanted = " or ".join("null" if t == "null" else "a string" if t == "string" else "an integer"
                                 if t == "integer" else "a number" for t in expected)
            return f"must be {wanted}, got {_json_name(value)}"
        if rule in ("minimum", "maximum"):
            side = "below the minimum" if rule == "minimum" else "above the maximum"
            return f"{_short(value)} is {side} of {error.validator_value}"
        if rule == "minLength":
            return "must not be empty"
        if rule == "maxLength":
            return f"is longer than {error.validator_value} characters"
        return error.message[:200]

    def rows(self, records: List[Dict[str, Any]]) -> List[Row]:
        """Valid decoded records (dicts) as rows (see parse)."""
        return [self.typed.row(record) for record in records]

    def model_inputs(self, rows: List[Row]) -> Tuple[List[List[str]], List[List[float]]]:
        """The model's two inputs from rows (see parse): a column of strings per categorical field
        ("" for missing) and a row of numbers per record (NaN for missing)."""
        first = len(self.categorical)
        columns = itertools.islice(zip(*rows), first)  # the categorical columns only: zip is lazy
        categorical = [[value or "" for value in column] for column in columns]
        numeric = [[math.nan if value is None or value is ABSENT else float(value) for value in row[first:]]
                   for row in rows]
        return categorical, numeric

    def example(self) -> Dict[str, Any]:
        """A valid record built from the schema: the first known category, the middle of each range."""
        record: Dict[str, Any] = {name: (self.fields[name]["examples"] or ["unknown"])[0] for name in self.categorical}
        for name in self.numeric:
            field = self.fields[name]
            middle = (field["minimum"] + field["maximum"]) / 2
            record[name] = int(middle) if "integer" in field["type"] else middle
        return record

    def answer(self, probability: float) -> Dict[str, Any]:
        return {f"{self.target}_probability": probability, self.target: probability >= self.threshold,
                "model_version": self.version}

    def explanation(self, explained: Dict[str, Any]) -> Dict[str, Any]:
        """One record's explanation: its answer, the reference record's probability and logit, and
        per field attributions in logit units that add up to logit - baseline_logit."""
        answer = self.answer(float(explained["probability"]))
        answer.update({"baseline_probability": float(explained["baseline_probability"]),
                       "logit": float(explained["logit"]), "baseline_logit": float(explained["baseline_logit"]),
                       "attributions": {name: float(value) for name, value in explained["attributions"].items()}})
        return answer

    # -- the Open Inference Protocol v2 ----------------------------------------------------------

    def v2_metadata(self) -> Dict[str, Any]:
        """Model metadata: one input tensor per request field, shape [-1] (one element per record)."""
        return {"name": self.name, "versions": [self.version], "platform": "pytorch_torchscript",
                "inputs": [{"name": name, "datatype": datatypes[0], "shape": [-1]}
                           for name, datatypes in self.v2_inputs.items()],
                "outputs": [{"name": name, "datatype": datatype, "shape": [-1]}
                            for name, datatype in self.v2_outputs.items()]}

    def parse_v2(self, request: Request) -> Tuple[List[Row], "V2Reply"]:
        """A v2 inference request -> rows (one per element of the input tensors)."""
        _check_media_type(request.content_type)
        body, binary = _split_binary(request.body, request.json_length)
        payload = parse_json(body)
        if not isinstance(payload, dict):
            raise _body_error(f"the body must be a JSON object with 'inputs', not {_json_name(payload)}")
        for key in payload:
            if key not in V2_REQUEST_KEYS:
                raise _tensor_error(key[:64], "is not a key of an inference request; expected "
                                    + ", ".join(V2_REQUEST_KEYS), field="body")
        request_id = payload.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise _tensor_error("id", f"must be a string, got {_json_name(request_id)}", field="body")
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise _body_error("'inputs' must be a non-empty list of tensors, one per field: "
                              + ", ".join(self.v2_inputs))
        columns: Dict[str, List[Any]] = {}
        for position, tensor in enumerate(inputs):
            name, column = self.v2_column(position, tensor, binary)
            if name in columns:
                raise _tensor_error(name, "is given more than once")
            columns[name] = column
        if binary:
            raise _body_error(f"{len(binary)} bytes of binary data follow the JSON but no input claims them")
        sizes = {len(column) for column in columns.values()}
        if len(sizes) > 1:
            shapes = ", ".join(f"{name} [{len(column)}]" for name, column in columns.items())
            raise _tensor_error(next(iter(columns)), f"inputs must all have the same shape [n]; got {shapes}")
        rows = sizes.pop()
        if rows > self.max_records:
            raise _body_error(f"{rows} records in one request; at most {self.max_records} are accepted",
                              status=413, kind="too_many_records")
        missing = [name for name in self.validator.schema["required"] if name not in columns]
        problems = [Problem(None, name, "is required but missing", "missing_field") for name in missing]
        records = [{name: column[row] for name, column in columns.items()} for row in range(rows)]
        for row, record in enumerate(records):
            problems.extend(Problem(row, field, reason, kind) for field, reason, kind in self.problems(record)
                            if kind != "missing_field")
        if problems:
            raise RequestError(400, problems)
        return self.rows(records), V2Reply(request_id, self.v2_requested(payload.get("outputs")))

    def v2_column(self, position: int, tensor: Any, binary: bytearray) -> Tuple[str, List[Any]]:
        """One input tensor's elements, checked against the field it names (binary data consumed)."""
        if not isinstance(tensor, dict):
            raise _tensor_error(f"inputs[{position}]", f"must be an object, not {_json_name(tensor)}")
        name = tensor.get("name")
        if not isinstance(name, str) or name not in self.v2_inputs:
            raise _tensor_error(str(name)[:64] if name is not None else f"inputs[{position}]",
                                "is not an input of this model; inputs are " + ", ".join(self.v2_inputs),
                                kind="unknown_field")
        datatype = tensor.get("datatype")
        accepted = self.v2_inputs[name]
        if datatype not in accepted:
            raise _tensor_error(name, f"datatype {str(datatype)[:20]} is not accepted; send {' or '.join(accepted)}")
        shape = tensor.get("shape")
        if (not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int)
                or isinstance(shape[0], bool) or shape[0] < 1):
            raise _tensor_error(name, f"shape must be [n] with n >= 1 records, got {_short(shape)}")
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise _tensor_error(name, "parameters must be an object")
        if "binary_data_size" in parameters:
            data = _binary_elements(name, datatype, shape[0], parameters["binary_data_size"], binary)
        else:
            data = tensor.get("data")
            if not isinstance(data, list):
                raise _tensor_error(name, f"data must be a list of {shape[0]} values, got {_json_name(data)}")
            if len(data) == shape[0] and any(isinstance(value, list) for value in data):
                data = [value[0] if isinstance(value, list) and len(value) == 1 else value for value in data]
            if len(data) != shape[0]:
                raise _tensor_error(name, f"shape [{shape[0]}] does not match the {len(data)} values in data")
            _check_elements(name, datatype, data)
        return name, data

    def v2_requested(self, outputs: Any) -> List[str]:
        if outputs is None:
            return list(self.v2_outputs)
        names = [output.get("name") if isinstance(output, dict) else None
                 for output in (outputs if isinstance(outputs, list) else [None])]
        for name in names:
            if name not in self.v2_outputs:
                raise _tensor_error("outputs", f"{_short(name)} is not an output of this model; outputs are "
                                    + ", ".join(self.v2_outputs), field="body")
        return names

    def v2_answer(self, probabilities: List[float], reply_to: "V2Reply") -> str:
        values = {f"{self.target}_probability": probabilities,
                  self.target: [p >= self.threshold for p in probabilities]}
        answer: Dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        if reply_to.request_id is not None:
            answer["id"] = reply_to.request_id
        answer["outputs"] = [{"name": name, "datatype": self.v2_outputs[name], "shape": [len(probabilities)],
                              "data": values[name]} for name in reply_to.outputs]
        return json.dumps(answer)


def shaped(answers: List[Dict[str, Any]], as_list: Any) -> Any:
    """Answers in the shape the request came in (see PredictionService.parse)."""
    if as_list == INSTANCES:
        return {"predictions": answers}
    return answers if as_list else answers[0]


class V2Reply(NamedTuple):
    request_id: Optional[str]
    outputs: List[str]


def problem_kind(rule: str) -> str:
    """The fixed label of a JSON Schema rule's refusal (metrics count refusals by it)."""
    return {"type": "wrong_type", "minimum": "out_of_range", "maximum": "out_of_range",
            "minLength": "empty_value", "maxLength": "too_long"}.get(rule, "invalid_value")


def _check_media_type(content_type: Optional[str]) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise _body_error(f"Content-Type '{media_type[:100]}' is not supported; send the records as JSON with "
                          "'Content-Type: application/json'", status=415, kind="media_type")


def _tensor_error(name: str, reason: str, field: Optional[str] = None, kind: str = "tensor") -> RequestError:
    if field == "body":
        return RequestError(400, [Problem(None, "body", f"'{name}' {reason}", kind)])
    return RequestError(400, [Problem(None, name, reason, kind)])


def _v2_datatypes(field: Dict[str, Any], categorical: bool) -> Tuple[str, ...]:
    """Accepted tensor datatypes of a field, the one metadata advertises first."""
    if categorical:
        return ("BYTES",)
    types = field["type"] if isinstance(field["type"], list) else [field["type"]]
    # Integer fields also take floats with no fraction: a column with missing values is a float column.
    return V2_INTEGERS + ("FP64", "FP32") if "integer" in types else V2_NUMBERS


def _check_elements(name: str, datatype: str, data: List[Any]) -> None:
    """JSON elements must be of the tensor's datatype (null: a missing value, allowed where the field is optional)."""
    for index, value in enumerate(data):
        if value is None:
            continue
        if datatype == "BYTES":
            fits = isinstance(value, str)
        elif datatype in V2_INTEGERS:
            fits = isinstance(value, int) and not isinstance(value, bool)
        else:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not fits:
            raise RequestError(400, [Problem(index, name, f"{_short(value)} is not a {datatype} value", "wrong_type")])


def _split_binary(body: Body, json_length: Optional[int]) -> Tuple[Body, bytearray]:
    """The binary-data extension: the JSON header's bytes, then the tensors' raw bytes."""
    if json_length is None:
        return body, bytearray()
    if not isinstance(body, (bytes, bytearray)) or not 0 < json_length <= len(body):
        raise _body_error(f"Inference-Header-Content-Length {json_length} does not fit a body of "
                          f"{len(body) if isinstance(body, (bytes, bytearray)) else 0} bytes")
    return bytes(body[:json_length]), bytearray(body[json_length:])


def _binary_elements(name: str, datatype: str, count: int, size: Any, binary: bytearray) -> List[Any]:
    """Take one tensor's elements from the front of the binary data (little-endian, row-major)."""
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
        raise _tensor_error(name, f"binary_data_size {_short(size)} does not fit the {len(binary)} bytes left")
    chunk = bytes(binary[:size])
    del binary[:size]
    if datatype == "BYTES":  # each element: a 4-byte length, then that many bytes
        values, offset = [], 0
        while offset + 4 <= len(chunk):
            (length,) = struct.unpack_from("<I", chunk, offset)
            value = chunk[offset + 4:offset + 4 + length]
            if len(value) != length:
                break
            try:
                values.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise _tensor_error(name, f"element {len(values)} is not UTF-8 text") from None
            offset += 4 + length
        if offset != len(chunk) or len(values) != count:
            raise _tensor_error(name, f"binary data does not hold {count} length-prefixed strings")
        return values
    width = struct.calcsize("<" + V2_BINARY_FORMATS[datatype])
    if size != width * count:
        raise _tensor_error(name, f"binary_data_size {size} is not {count} x {width} bytes of {datatype}")
    values = list(struct.unpack(f"<{count}{V2_BINARY_FORMATS[datatype]}", chunk))
    # NaN is how binary data says "missing" (JSON data says null); infinities are refused by the schema's bounds
    return [None if isinstance(value, float) and math.isnan(value) else value for value in values]


def _is_text(value: str) -> bool:
    """False for strings holding an unpaired surrogate ("\\ud800" is valid JSON but no text:
    model.pt cannot take it and would fail the whole batch)."""
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _json_name(value: Any) -> str:
    return JSON_NAMES.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
