"""The request schema as msgspec types: a body of valid records is decoded and checked in one C
call, straight from its bytes, into rows (a tuple per record, in the schema's field order).

It only ever vouches for a body; where it cannot, PredictionService reads the body again the
strict way, which words what is wrong. So it may refuse more than the schema does (an integer
written 3.0, a byte order mark, a colon inside a string), never less:

- each field's type, bounds and length are the schema's, unknown fields are refused, required
  fields must be there, and a field the schema does not require is ABSENT when left out;
- msgspec is as strict as the strict reader about the JSON itself (UTF-8, no unpaired surrogates,
  no NaN or Infinity, no number beyond a double), but keeps the last of duplicated keys. So a body
  must also hold exactly one colon per member it was read with: a duplicated key leaves members
  fewer than colons; a colon inside a string only makes colons more.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated, Any, Dict, List, Optional, Tuple, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType
from msgspec.structs import astuple

# A field the request left out (a field the schema does not require): falsy, as None is.
ABSENT = UNSET
INSTANCES = "instances"  # KServe's v1 body: {"instances": [record, ...]}
PEEK = 64  # characters read to tell a list from an object


class Shape(Enum):
    """A native body's shape, which its answer takes: one record gets one answer, a list a list,
    and KServe's v1 body {"instances": [...]} gets {"predictions": [...]}."""

    RECORD = "record"
    LIST = "list"
    INSTANCES = INSTANCES


def field_type(field: Dict[str, Any]) -> Any:
    """One JSON Schema property as a msgspec type with its constraints."""
    types = field["type"] if isinstance(field["type"], list) else [field["type"]]
    if "string" in types:
        kind: Any = Annotated[str, Meta(min_length=field.get("minLength", 0), max_length=field["maxLength"])]
    elif "integer" in types:
        kind = Annotated[int, Meta(ge=math.ceil(field["minimum"]), le=math.floor(field["maximum"]))]
    else:
        kind = Annotated[float, Meta(ge=float(field["minimum"]), le=float(field["maximum"]))]
    return Optional[kind] if "null" in types else kind


class TypedRecords:
    """Decoders for the three body shapes the native API takes (one record, a list of records,
    {"instances": [...]}), from the schema of one record."""

    def __init__(self, schema: Dict[str, Any], names: List[str], max_records: int):
        required = set(schema["required"])
        fields: List[Tuple[Any, ...]] = []
        for name in names:
            kind = field_type(schema["properties"][name])
            fields.append((name, kind) if name in required else (name, Union[kind, UnsetType], UNSET))
        # Struct types made at run time from the schema: their fields are known only then.
        record: Any = msgspec.defstruct("Record", fields, kw_only=True, forbid_unknown_fields=True)
        self.record = record
        self.names = names
        self.max_records = max_records
        self.one = msgspec.json.Decoder(record)
        self.many = msgspec.json.Decoder(List[record])
        instances: Any = msgspec.defstruct("Instances", [(INSTANCES, List[record])], forbid_unknown_fields=True)
        self.instances = msgspec.json.Decoder(instances)

    def read(self, body: Any) -> Optional[Tuple[List[tuple], Shape]]:
        """The rows of a body of valid records and its shape, or None where only the strict
        reader can decide."""
        if not isinstance(body, (bytes, bytearray, str)):
            return None
        try:
            # The first character tells a list from an object without copying the body; leading
            # whitespace longer than the peek only costs the strict reading.
            if body[:PEEK].lstrip()[:1] in (b"[", "["):
                records, shape = self.many.decode(body), Shape.LIST
            else:
                try:
                    records, shape = [self.one.decode(body)], Shape.RECORD
                except msgspec.ValidationError:
                    records, shape = self.instances.decode(body).instances, Shape.INSTANCES
        except (msgspec.DecodeError, ValueError):  # not JSON, not valid, or not UTF-8 in a string
            return None
        if not records or len(records) > self.max_records:
            return None  # the strict reader words the refusal
        rows = [astuple(record) for record in records]
        members = len(self.names) * len(rows) - sum(row.count(ABSENT) for row in rows) + (shape is Shape.INSTANCES)
        colons = body.count(":") if isinstance(body, str) else body.count(b":")
        return (rows, shape) if colons == members else None

    def is_valid(self, record: Any) -> bool:
        """Whether a decoded record (a dict) is one the schema takes; False may still be valid
        (3.0 for an integer), so False only means the validator must look."""
        try:
            msgspec.convert(record, self.record)
            return True
        except msgspec.ValidationError:
            return False

    def row(self, record: Dict[str, Any]) -> tuple:
        """A valid decoded record as a row."""
        return tuple(record.get(name, ABSENT) for name in self.names)


def encode(value: Any) -> str:
    """Compact JSON text of an answer."""
    return msgspec.json.encode(value).decode()
