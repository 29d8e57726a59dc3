"""Request parsing, validation and response shaping for the late-arrival handler.

Pure logic: no I/O, no torch, no TorchServe. The handler gives it raw request
bodies and a predict function; it gives back one reply per request. A bad
request is answered on its own and never fails the other requests TorchServe
batched with it. Python 3.9 compatible: it runs in the serving image's worker.
"""

import json
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import fastjsonschema
from jsonschema import Draft202012Validator

Body = Union[bytes, bytearray, str, dict, list, None]
# (categorical columns, numeric rows with NaN for missing) -> late probabilities
Predict = Callable[[List[List[str]], List[List[float]]], Sequence[float]]

JSON_TYPES = ("application/json", "text/json", "text/plain", "application/octet-stream", "")
# An error reply lists at most this many problems: TorchServe kills the worker whose reply is over
# max_response_size (1 MiB), and a 1,000-record request can hold 16,000 problems.
MAX_REPORTED_PROBLEMS = 50
JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
              float: "a number", type(None): "null"}


class Reply(NamedTuple):
    status: int
    body: str  # JSON text


class RequestError(Exception):
    """Refuses one request; problems are (record index or None, field, reason)."""

    def __init__(self, status: int, problems: List[Tuple[Optional[int], str, str]]):
        super().__init__(problems[0][2])
        self.status = status
        self.problems = problems

    def reply(self) -> Reply:
        first = self.problems[0]
        where = f"field '{first[1]}'" if first[0] is None else "record {}, field '{}'".format(*first[:2])
        summary = f"{where}: {first[2]}"
        if len(self.problems) > 1:
            summary += " (and {} more problem{})".format(len(self.problems) - 1, "s" if len(self.problems) > 2 else "")
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        errors = [{"record": record, "field": field, "reason": reason} for record, field, reason in shown]
        reply: Dict[str, Any] = {"code": self.status, "error": summary, "errors": errors}
        if len(self.problems) > len(shown):
            reply["errors_omitted"] = len(self.problems) - len(shown)
        return Reply(self.status, json.dumps(reply))


def _body_error(reason: str, status: int = 400) -> RequestError:
    return RequestError(status, [(None, "body", reason)])


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


class LateArrivalService:
    """Turns batched request bodies into late-arrival replies, one per request."""

    def __init__(self, schema: Dict[str, Any], predict: Predict):
        Draft202012Validator.check_schema(schema)
        self.validator = Draft202012Validator(schema)
        # The same schema compiled to Python: decides a valid record in microseconds (the
        # common case); the validator above only runs to word what is wrong.
        self.is_valid = _compiled(schema)
        self.fields: Dict[str, Dict[str, Any]] = schema["properties"]
        facts = schema["x-model"]
        self.categorical: List[str] = facts["categorical"]
        self.numeric: List[str] = facts["numeric"]
        self.version: str = facts["version"]
        # Answers are {"<target>_probability": p, "<target>": p >= threshold, "model_version": ...}
        self.target: str = facts["target"]
        self.threshold: float = facts["threshold"]
        self.max_records: int = facts["max_records"]
        self.predict = predict

    def handle(self, requests: Sequence[Tuple[Body, Optional[str]]]) -> List[Reply]:
        """requests: (body, content type) per request, in batch order."""
        replies: List[Optional[Reply]] = [None] * len(requests)
        accepted: List[Tuple[int, List[Dict[str, Any]], bool]] = []
        for index, (body, content_type) in enumerate(requests):
            try:
                records, as_list = self.parse(body, content_type)
                accepted.append((index, records, as_list))
            except RequestError as error:
                replies[index] = error.reply()
        if accepted:
            try:
                answered = self.answer_requests(accepted)
            except Exception:  # noqa: BLE001 - whatever the model raised, neighbours must not share it
                # One request the model cannot take must not fail the others: retry them one by one.
                answered = [self.answer_alone(request) for request in accepted]
            for (index, _, _), reply in zip(accepted, answered):
                replies[index] = reply
        return [reply for reply in replies if reply is not None]

    def answer_requests(self, accepted: List[Tuple[int, List[Dict[str, Any]], bool]]) -> List[Reply]:
        """One forward pass for every record of every accepted request; one reply per request."""
        everything = [record for _, records, _ in accepted for record in records]
        categorical, numeric = self.model_inputs(everything)
        probabilities = [float(p) for p in self.predict(categorical, numeric)]
        replies, offset = [], 0
        for _, records, as_list in accepted:
            answers = [self.answer(p) for p in probabilities[offset:offset + len(records)]]
            offset += len(records)
            replies.append(Reply(200, json.dumps(answers if as_list else answers[0])))
        return replies

    def answer_alone(self, request: Tuple[int, List[Dict[str, Any]], bool]) -> Reply:
        try:
            return self.answer_requests([request])[0]
        except Exception as error:  # noqa: BLE001 - reported to this request only
            reason = f"the model could not score this request ({type(error).__name__})"
            return Reply(500, json.dumps({"code": 500, "error": reason, "errors": []}))

    def parse(self, body: Body, content_type: Optional[str]) -> Tuple[List[Dict[str, Any]], bool]:
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type not in JSON_TYPES and not media_type.endswith("+json"):
            raise _body_error(f"Content-Type '{media_type[:100]}' is not supported; send the records as JSON with "
                              "'Content-Type: application/json'", status=415)
        payload = parse_json(body)
        as_list = isinstance(payload, list)
        records = payload if as_list else [payload]
        if not isinstance(payload, (dict, list)):
            raise _body_error(f"the body must be a JSON object or a list of objects, not {_json_name(payload)}")
        if not records:
            raise _body_error("the list of records is empty")
        if len(records) > self.max_records:
            raise _body_error(f"{len(records)} records in one request; at most {self.max_records} are accepted",
                              status=413)
        problems: List[Tuple[Optional[int], str, str]] = []
        for index, record in enumerate(records):
            problems.extend((index if as_list else None, field, reason) for field, reason in self.problems(record))
        if problems:
            raise RequestError(400, problems)
        return records, as_list

    def problems(self, record: Any) -> List[Tuple[str, str]]:
        """(field, reason) for everything wrong with one record."""
        if not isinstance(record, dict):
            return [("record", f"must be a JSON object, not {_json_name(record)}")]
        found = [(name, "holds an unpaired UTF-16 surrogate (such as \\ud800), which is not text")
                 for name in self.categorical if isinstance(record.get(name), str) and not _is_text(record[name])]
        if self.is_valid(record):
            return found
        for name in record:
            if name not in self.fields:
                found.append((name[:64], "is not a known field; known fields are " + ", ".join(self.fields)))
        for name in self.validator.schema["required"]:
            if name not in record:
                found.append((name, "is required but missing"))
        for error in self.validator.iter_errors(record):
            if error.path:  # required / additionalProperties are reported above
                found.append((str(error.path[0]), self.reason(error)))
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

    def model_inputs(self, records: List[Dict[str, Any]]) -> Tuple[List[List[str]], List[List[float]]]:
        categorical = [[record.get(name) or "" for record in records] for name in self.categorical]
        numeric = [[math.nan if record.get(name) is None else float(record[name]) for name in self.numeric]
                   for record in records]
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


def _compiled(schema: Dict[str, Any]) -> Callable[[Any], bool]:
    validate = fastjsonschema.compile(schema)

    def is_valid(record: Any) -> bool:
        try:
            validate(record)
            return True
        except fastjsonschema.JsonSchemaException:
            return False

    return is_valid


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
