"""handler/typed_records.py without a server, on the schema the exporter writes: the schema as
msgspec types vouches only for what the schema accepts, and says None wherever the strict reader
has to look."""

import json

import msgspec
import pytest

from handler.typed_records import ABSENT, INSTANCES, Shape, TypedRecords, field_type
from model.config import ROOT

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())


@pytest.fixture(scope="module")
def schema(config_schema):
    return config_schema


@pytest.fixture(scope="module")
def typed(schema):
    facts = schema["x-model"]
    return TypedRecords(schema, facts["categorical"] + facts["numeric"], facts["max_records"])


def test_integer_bounds_that_are_not_whole_numbers_are_rounded_inward():
    kind = field_type({"type": "integer", "minimum": 0.5, "maximum": 9.5})
    assert msgspec.convert(1, kind) == 1 and msgspec.convert(9, kind) == 9
    for outside in (0, 10):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(outside, kind)


def test_a_field_left_out_is_absent_and_a_null_is_none(typed, schema):
    optional = next(name for name in typed.names if name not in schema["required"])
    left_out = {key: value for key, value in SAMPLE.items() if key != optional}
    (row,), shape = typed.read(json.dumps(left_out).encode())
    assert row[typed.names.index(optional)] is ABSENT and shape is Shape.RECORD
    (row,), _ = typed.read(json.dumps({**SAMPLE, optional: None}).encode())
    assert row[typed.names.index(optional)] is None


def test_the_three_shapes_read_as_the_same_rows(typed):
    one, _ = typed.read(json.dumps(SAMPLE))
    assert typed.read(json.dumps([SAMPLE, SAMPLE])) == (one * 2, Shape.LIST)
    assert typed.read(json.dumps({INSTANCES: [SAMPLE]})) == (one, Shape.INSTANCES)
    assert one == [typed.row(SAMPLE)]


@pytest.mark.parametrize(
    "change",
    [
        {"carrier": ""},
        {"carrier": "X" * 65},
        {"month": 13},
        {"month": 3.0},
        {"month": True},
        {"distance": "719"},
        {"unknown": 1},
    ],
)
def test_anything_the_schema_might_refuse_is_left_to_the_strict_reader(typed, change):
    assert typed.read(json.dumps({**SAMPLE, **change})) is None


def test_empty_or_too_many_records_are_left_to_the_strict_reader(typed):
    assert typed.read(b"[]") is None
    assert typed.read(json.dumps([SAMPLE] * (typed.max_records + 1))) is None
    assert typed.read(json.dumps([SAMPLE] * typed.max_records)) is not None


def test_is_valid_agrees_with_the_schema_on_decoded_records(typed):
    assert typed.is_valid(SAMPLE)
    assert not typed.is_valid({**SAMPLE, "month": 13}) and not typed.is_valid({**SAMPLE, "extra": 1})
