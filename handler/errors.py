"""Replies and the one error shape. Every error the handler answers, on every route, is

    {"code": <HTTP status>, "type": "<stable snake_case>", "error": "<one sentence>",
     "errors": [{"record": ..., "field": ..., "reason": ...}, ...], "errors_omitted": <n>}

`error` is the first problem, with "(and N more problems)" when there are more; `errors` lists
each problem (empty where the error is no field's), at most MAX_REPORTED_PROBLEMS of them, and
`errors_omitted` (only then) counts the rest. On the v2 routes `record` is the element's index
and `field` the input's name.

Pure Python, Python 3.9 compatible: it runs in the serving image's worker.
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

# An error reply lists at most this many problems: TorchServe kills the worker whose reply is over
# max_response_size (1 MiB), and a 1,000-record request can hold 16,000 problems.
MAX_REPORTED_PROBLEMS = 50
# The stable `type` of each refusal, by the kind of its first problem (else invalid_request).
TYPES_BY_KIND = {"media_type": "unsupported_media_type", "too_many_records": "too_many_records", "header": "bad_header"}
# The `type` of the errors that are no request's fault, or no field's.
TYPES_BY_STATUS = {404: "not_found", 500: "internal_error", 501: "not_implemented"}
JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


class Problem(NamedTuple):
    record: Optional[int]  # the record's (v2: the element's) index; None for the body or one record
    field: str
    reason: str
    kind: str  # a fixed label (see records.problem_kind) that the handler's metrics count refusals by


class Reply(NamedTuple):
    status: int
    body: str  # JSON text
    scored: Tuple[float, ...] = ()  # probabilities of the records predicted (predictions and v2 infer)
    refused: Tuple[str, ...] = ()  # problem kinds: one per refused record and kind (or per refused body)
    fields: Tuple[str, ...] = ()  # the fields (v2: inputs) a refused request was refused for, in order


class RequestError(Exception):
    """Refuses one request with its problems."""

    def __init__(self, status: int, problems: List[Problem]):
        super().__init__(problems[0].reason)
        self.status = status
        self.problems = problems

    def summary(self, v2: bool = False) -> str:
        first = self.problems[0]
        if first.kind == "header":
            where = f"header '{first.field}'"
        elif v2:
            where = f"input '{first.field}'" if first.field != "body" else "body"
            where += "" if first.record is None else f", element {first.record}"
        else:
            where = (
                f"field '{first.field}'" if first.record is None else f"record {first.record}, field '{first.field}'"
            )
        text = f"{where}: {first.reason}"
        if len(self.problems) > 1:
            text += " (and {} more problem{})".format(len(self.problems) - 1, "s" if len(self.problems) > 2 else "")
        return text

    def refused(self) -> Tuple[str, ...]:
        """One kind per refused record and kind; problems of the body or of a lone record count once."""
        return tuple(sorted(kind for _, kind in {(problem.record, problem.kind) for problem in self.problems}))

    def fields(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(problem.field for problem in self.problems))

    def type(self) -> str:
        return TYPES_BY_KIND.get(self.problems[0].kind, "invalid_request")

    def reply(self, v2: bool = False) -> Reply:
        """The error reply; v2: worded for the Open Inference Protocol (inputs and elements), which
        reads the message from `error`."""
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        body = error_body(
            self.status,
            self.type(),
            self.summary(v2=v2),
            [{"record": p.record, "field": p.field, "reason": p.reason} for p in shown],
        )
        if len(self.problems) > len(shown):
            body["errors_omitted"] = len(self.problems) - len(shown)
        return Reply(self.status, json.dumps(body), refused=self.refused(), fields=self.fields())


def error_body(status: int, type_: str, error: str, errors: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"code": status, "type": type_, "error": error, "errors": errors}


def body_error(reason: str, status: int = 400, kind: str = "body") -> RequestError:
    return RequestError(status, [Problem(None, "body", reason, kind)])


def server_error(status: int, error: str) -> Reply:
    """An error that is no field's (a server fault, a route or feature that is not there): no
    problems to list."""
    return Reply(status, json.dumps(error_body(status, TYPES_BY_STATUS[status], error, [])))


def json_name(value: Any) -> str:
    return JSON_NAMES.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def tensor_error(name: str, reason: str, field: Optional[str] = None, kind: str = "tensor") -> RequestError:
    """A problem with a v2 tensor or key, named by it (field "body": a key of the body itself)."""
    if field == "body":
        return RequestError(400, [Problem(None, "body", f"'{name}' {reason}", kind)])
    return RequestError(400, [Problem(None, name, reason, kind)])
