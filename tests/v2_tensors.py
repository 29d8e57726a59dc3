"""A v2 inference request's input tensors built from the model's schema.json (not from the served
metadata, which the v2 tests check on their own): one tensor per field of the records, shape [n]."""

from __future__ import annotations

from typing import Any


def v2_datatype(schema: dict[str, Any], name: str) -> str:
    """The datatype metadata advertises first for a field: BYTES, INT64 or FP64."""
    if name in schema["x-model"]["categorical"]:
        return "BYTES"
    types = schema["properties"][name]["type"]
    return "INT64" if "integer" in (types if isinstance(types, list) else [types]) else "FP64"


def v2_inputs(schema: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tensor per field of the first record, its values from every record."""
    return [
        {
            "name": name,
            "datatype": v2_datatype(schema, name),
            "shape": [len(records)],
            "data": [record[name] for record in records],
        }
        for name in records[0]
    ]
