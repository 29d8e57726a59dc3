"""One model's request record, as its exported schema.json describes it (name, target, fields
and limits): what is wrong with a record, the model's inputs from valid ones, and the answer
per record. Both protocols (native.py, v2.py) read records through it.

Pure Python, Python 3.9 compatible: it runs in the serving image's worker.
"""

import itertools
import math
from typing import Any, Dict, List, Tuple

from jsonschema import Draft202012Validator

from .errors import json_name, short
from .typed_records import ABSENT, TypedRecords

Row = Tuple[Any, ...]  # a record's values in the order of the model's fields (categorical, then numeric)


class ModelSchema:
    """The facts schema.json records about one model, and the checks its records get."""

    def __init__(self, schema: Dict[str, Any]):
        Draft202012Validator.check_schema(schema)
        self.validator = Draft202012Validator(schema)
        self.fields: Dict[str, Dict[str, Any]] = schema["properties"]
        self.required: List[str] = schema["required"]
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

    def problems(self, record: Any) -> List[Tuple[str, str, str]]:
        """(field, reason, kind) for everything wrong with one record."""
        if not isinstance(record, dict):
            return [("record", f"must be a JSON object, not {json_name(record)}", "not_an_object")]
        found = [
            (name, "holds an unpaired UTF-16 surrogate (such as \\ud800), which is not text", "not_text")
            for name in self.categorical
            if isinstance(record.get(name), str) and not is_text(record[name])
        ]
        if self.typed.is_valid(record):
            return found
        for name in record:
            if name not in self.fields:
                found.append(
                    (name[:64], "is not a known field; known fields are " + ", ".join(self.fields), "unknown_field")
                )
        for name in self.required:
            if name not in record:
                found.append((name, "is required but missing", "missing_field"))
        for error in self.validator.iter_errors(record):
            if error.path:  # required / additionalProperties are reported above
                found.append((str(error.path[0]), reason(error), problem_kind(error.validator)))
        return found

    def rows(self, records: List[Dict[str, Any]]) -> List[Row]:
        """Valid decoded records (dicts) as rows."""
        return [self.typed.row(record) for record in records]

    def model_inputs(self, rows: List[Row]) -> Tuple[List[List[str]], List[List[float]]]:
        """The model's two inputs from rows: a column of strings per categorical field ("" for
        missing) and a row of numbers per record (NaN for missing)."""
        first = len(self.categorical)
        columns = itertools.islice(zip(*rows), first)  # the categorical columns only: zip is lazy
        categorical = [[value or "" for value in column] for column in columns]
        numeric = [
            [math.nan if value is None or value is ABSENT else float(value) for value in row[first:]] for row in rows
        ]
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
        return {
            f"{self.target}_probability": probability,
            self.target: probability >= self.threshold,
            "model_version": self.version,
        }

    def explanation(self, explained: Dict[str, Any]) -> Dict[str, Any]:
        """One record's explanation: its answer, the reference record's probability and logit, and
        per field attributions in logit units that add up to logit - baseline_logit."""
        answer = self.answer(float(explained["probability"]))
        answer.update(
            {
                "baseline_probability": float(explained["baseline_probability"]),
                "logit": float(explained["logit"]),
                "baseline_logit": float(explained["baseline_logit"]),
                "attributions": {name: float(value) for name, value in explained["attributions"].items()},
            }
        )
        return answer


def reason(error: Any) -> str:
    """A JSON Schema error about one field, as a sentence."""
    value = error.instance
    rule = error.validator
    if rule == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        wanted = " or ".join(
            "null" if t == "null" else "a string" if t == "string" else "an integer" if t == "integer" else "a number"
            for t in expected
        )
        return f"must be {wanted}, got {json_name(value)}"
    if rule in ("minimum", "maximum"):
        side = "below the minimum" if rule == "minimum" else "above the maximum"
        return f"{short(value)} is {side} of {error.validator_value}"
    if rule == "minLength":
        return "must not be empty"
    if rule == "maxLength":
        return f"is longer than {error.validator_value} characters"
    return str(error.message)[:200]


def problem_kind(rule: str) -> str:
    """The fixed label of a JSON Schema rule's refusal (metrics count refusals by it)."""
    return {
        "type": "wrong_type",
        "minimum": "out_of_range",
        "maximum": "out_of_range",
        "minLength": "empty_value",
        "maxLength": "too_long",
    }.get(rule, "invalid_value")


def is_text(value: str) -> bool:
    """False for strings holding an unpaired surrogate ("\\ud800" is valid JSON but no text:
    model.pt cannot take it and would fail the whole batch)."""
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
