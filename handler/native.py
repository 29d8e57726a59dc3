"""The native JSON API (/predictions and /explanations), with KServe's v1 body: one record, a
list of records, or {"instances": [...]} in; the answers in the same shape out.

A body of valid records is decoded and checked in C (typed_records.py); anything else is read
again the strict way (parse_json), which words what is wrong.
Pure Python, Python 3.9 compatible: it runs in the serving image's worker.
"""

import json
import math
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import Problem, RequestError, body_error, json_name
from .records import ModelSchema, Row
from .typed_records import INSTANCES, Shape, encode

Body = Union[bytes, bytearray, str, dict, list, None]
JSON_TYPES = ("application/json", "text/json", "text/plain", "application/octet-stream", "")


def check_media_type(content_type: Optional[str]) -> None:
    """JSON is accepted as application/json, any +json type, text/json, text/plain,
    application/octet-stream or no Content-Type at all."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise body_error(
            f"Content-Type '{media_type[:100]}' is not supported; send the records as JSON with "
            "'Content-Type: application/json'",
            status=415,
            kind="media_type",
        )


def parse_json(body: Body) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicated keys, finite numbers."""
    if isinstance(body, (dict, list)):  # already decoded upstream
        return body
    if body is None:
        raise body_error("the request has no body; send a JSON object or a list of objects")
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise body_error(f"the body is not valid UTF-8 (byte {error.start})") from None
    text = body.lstrip("\ufeff")
    if not text.strip():
        raise body_error("the body is empty; send a JSON object or a list of objects")
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise body_error("the body is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError is a ValueError; so are our refusals
        raise body_error(f"the body is not valid JSON: {str(error)[:200]}") from None


class NativeJson:
    """Reads native bodies into rows and writes the answers in the shape the body came in."""

    def __init__(self, model: ModelSchema):
        self.model = model

    def parse(self, body: Body, content_type: Optional[str]) -> Tuple[List[Row], Shape]:
        """The records as rows (None or ABSENT where a value is missing) and the body's shape."""
        check_media_type(content_type)
        reading = self.model.typed.read(body)
        if reading is not None:  # the common case: well-formed and valid, decided in C
            return reading
        # Anything else is read again the strict way, which words what is wrong.
        records, shape = self.records_of(parse_json(body))
        problems: List[Problem] = []
        for index, record in enumerate(records):
            where = None if shape is Shape.RECORD else index
            problems.extend(Problem(where, *problem) for problem in self.model.problems(record))
        if problems:
            raise RequestError(400, problems)
        return self.model.rows(records), shape

    def records_of(self, payload: Any) -> Tuple[List[Any], Shape]:
        """The records of a decoded body and its shape."""
        shape = Shape.LIST if isinstance(payload, list) else Shape.RECORD
        if isinstance(payload, dict) and list(payload) == [INSTANCES] and isinstance(payload[INSTANCES], list):
            payload, shape = payload[INSTANCES], Shape.INSTANCES  # no record has a field of that name
        if not isinstance(payload, (dict, list)):
            raise body_error(f"the body must be a JSON object or a list of objects, not {json_name(payload)}")
        records = [payload] if isinstance(payload, dict) else payload  # a dict: shape is Shape.RECORD
        if not records:
            raise body_error("the list of records is empty")
        if len(records) > self.model.max_records:
            raise body_error(
                f"{len(records)} records in one request; at most {self.model.max_records} are accepted",
                status=413,
                kind="too_many_records",
            )
        return records, shape

    def answer(self, probabilities: List[float], shape: Shape) -> str:
        return encode(shaped([self.model.answer(p) for p in probabilities], shape))

    def explained(self, explanations: List[Dict[str, Any]], shape: Shape) -> str:
        return json.dumps(shaped([self.model.explanation(e) for e in explanations], shape))


def shaped(answers: List[Dict[str, Any]], shape: Shape) -> Any:
    """Answers in the shape the request came in."""
    if shape is Shape.INSTANCES:
        return {"predictions": answers}
    return answers if shape is Shape.LIST else answers[0]


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
