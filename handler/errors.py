"""Replies and the one error shape: a refused request names each problem (record, field,
reason), and every error the handler answers is the same JSON object.

Pure Python, Python 3.9 compatible: it runs in the serving image's worker.
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

# An error reply lists at most this many problems: TorchServe kills the worker whose reply is over
# max_response_size (1 MiB), and a 1,000-record request can hold 16,000 problems.
MAX_REPORTED_PROBLEMS = 50
JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
              float: "a number", type(None): "null"}


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


def body_error(reason: str, status: int = 400, kind: str = "body") -> RequestError:
    return RequestError(status, [Problem(None, "body", reason, kind)])


def server_error(status: int, error: str, v2: bool = False) -> Reply:
    """An error that is no request's fault (or no field's): no problems to list."""
    if v2:
        return Reply(status, json.dumps({"error": error}))
    return Reply(status, json.dumps({"code": status, "error": error, "errors": []}))


def json_name(value: Any) -> str:
    return JSON_NAMES.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
