"""Malformed and hostile requests to POST /predictions/mymodel, each with the status the service owes it.

Every entry carries one defect, and where it holds records they are sample_input.json's,
so a wrong status points at that defect and nothing else. The service must refuse each with a
4xx and a JSON body naming the problem (only TorchServe's frontend answers an
oversized body, with an empty 413), never with a 5xx, and never at the cost of a
worker or of the good requests batched with it.

Pure standard library plus the project's config: the Locust process imports this too,
and it must never import torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import DEFAULT_CONFIG, ROOT, load_settings

SAMPLE_PATH = ROOT / "sample_input.json"
SERVER_CONFIG = ROOT / "config.properties"
JSON_HEADERS = {"Content-Type": "application/json"}
# The stable error type the service answers each refusal status with.
ERROR_TYPES = {400: "invalid_request", 413: "too_many_records", 415: "unsupported_media_type"}
DEEP = 100_000  # far beyond Python's recursion limit, still well under 1 MiB
WIDE = 20_000  # unknown fields in one record: each is reported, so the error reply outgrows 1 MiB


@dataclass(frozen=True)
class HostileRequest:
    """One request and the status the service must answer it with."""

    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    status: int = 400
    # TorchServe's frontend refuses oversized bodies itself, before any worker, with an empty body.
    refused_by_frontend: bool = False

    @property
    def error_type(self) -> str:
        """The `type` of the service's JSON error for this request's status."""
        return ERROR_TYPES[self.status]


def sample_record() -> dict[str, Any]:
    return json.loads(SAMPLE_PATH.read_text())


def max_request_size(path: Path = SERVER_CONFIG) -> int:
    """TorchServe's max_request_size from config.properties (its default, 6.5 MB, when unset)."""
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "max_request_size":
            return int(value.strip())
    return 6_553_500


def valid_records(count: int = 8) -> list[dict[str, Any]]:
    """Good records to mix in with the bad ones: the sample with the schedule and route varied."""
    sample = sample_record()
    routes = [
        ("UA", "EWR", "ORD", 719),
        ("DL", "JFK", "ATL", 760),
        ("AA", "LGA", "MIA", 1096),
        ("B6", "JFK", "BOS", 187),
        ("WN", "LGA", "DEN", 1620),
        ("US", "LGA", "CLT", 544),
    ]
    records = []
    for i in range(count):
        carrier, origin, dest, distance = routes[i % len(routes)]
        records.append(
            {
                **sample,
                "carrier": carrier,
                "origin": origin,
                "dest": dest,
                "distance": distance,
                "month": 1 + (i * 5) % 12,
                "day_of_week": i % 7,
                "hour": 6 + (i * 3) % 17,
                "minute": (i * 13) % 60,
            }
        )
    return records


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _literal(record: dict[str, Any], name: str, literal: str) -> bytes:
    """The record with `name` set to raw JSON text that json.dumps would never write."""
    marker = "__literal__"
    return json.dumps({**record, name: marker}).replace(f'"{marker}"', literal).encode()


def _without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in names}


def _body_defects(sample: dict[str, Any], good: bytes) -> list[HostileRequest]:
    """Bodies that are not one JSON object or list: syntax, encodings, literals, nesting."""
    nested_arrays = b"[" * DEEP + b"]" * DEEP
    nested_objects = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    return [
        HostileRequest("truncated_json", good[:-1]),
        HostileRequest("trailing_comma", good[:-1] + b",}"),
        HostileRequest("single_quoted_json", good.replace(b'"', b"'")),
        HostileRequest("trailing_garbage", good + b" x"),
        HostileRequest("two_concatenated_objects", good + good),
        HostileRequest("empty_body", b""),
        HostileRequest("whitespace_body", b" \n\t\r\n "),
        HostileRequest("json_string_body", b'"UA EWR ORD"'),
        HostileRequest("json_number_body", b"42"),
        HostileRequest("json_boolean_body", b"true"),
        HostileRequest("json_null_body", b"null"),
        HostileRequest("csv_labelled_as_json", b"carrier,origin,dest\nUA,EWR,ORD\n"),
        HostileRequest("nan_literal", _literal(sample, "distance", "NaN")),
        HostileRequest("infinity_literal", _literal(sample, "temp", "Infinity")),
        HostileRequest("negative_infinity_literal", _literal(sample, "temp", "-Infinity")),
        HostileRequest("float_overflowing_to_infinity", _literal(sample, "distance", "1e999")),
        HostileRequest("integer_with_thousands_of_digits", _literal(sample, "month", "9" * 3000)),
        HostileRequest("negative_integer_with_thousands_of_digits", _literal(sample, "minute", "-" + "7" * 3000)),
        HostileRequest("integer_over_pythons_digit_limit", _literal(sample, "seats", "1" * 5000)),
        HostileRequest("deeply_nested_arrays", nested_arrays),
        HostileRequest("deeply_nested_objects", nested_objects),
        HostileRequest("deeply_nested_array_in_a_field", _literal(sample, "temp", "[" * 5000 + "]" * 5000)),
        # Deep enough to pass the JSON parser, close to where validating it could hit the recursion limit.
        HostileRequest("array_nested_near_the_recursion_limit", _literal(sample, "temp", "[" * 950 + "]" * 950)),
        HostileRequest("deeply_nested_object_in_a_field", _literal(sample, "temp", '{"a":' * 5000 + "1" + "}" * 5000)),
        HostileRequest("latin1_bytes", good.replace(b"BOEING", "AÉROSPATIALE".encode("latin-1"))),
        HostileRequest(
            "latin1_declared_in_charset",
            good.replace(b"BOEING", "AÉROSPATIALE".encode("latin-1")),
            {"Content-Type": "application/json; charset=iso-8859-1"},
        ),
        HostileRequest("stray_continuation_byte", good.replace(b"BOEING", b"BOE\x80ING")),
        HostileRequest("overlong_utf8_encoding", good.replace(b"BOEING", b"BOE\xc0\xafING")),
        HostileRequest("utf16_body_with_bom", json.dumps(sample).encode("utf-16")),
        HostileRequest("utf16le_body_without_bom", json.dumps(sample).encode("utf-16-le")),
        HostileRequest("lone_surrogate_escape_in_a_category", _literal(sample, "carrier", '"\\ud800"')),
        HostileRequest("duplicated_key", good[:-1] + b', "month": 3}'),
    ]


def _field_defects(sample: dict[str, Any]) -> list[HostileRequest]:
    """Well-formed JSON objects with one field wrong: presence, type, bounds, size."""
    cases = {
        "null_for_required_category": {**sample, "carrier": None},
        "null_for_required_number": {**sample, "month": None},
        "missing_required_category": _without(sample, "dest"),
        "missing_required_number": _without(sample, "distance"),
        "empty_object": {},
        "unknown_field": {**sample, "tail_number": "N14228"},
        "post_departure_field": {**sample, "dep_delay": 42},
        "number_for_category": {**sample, "carrier": 7},
        "list_for_category": {**sample, "origin": ["EWR"]},
        "object_for_category": {**sample, "manufacturer": {"name": "BOEING"}},
        "empty_required_category": {**sample, "carrier": ""},
        "very_long_category": {**sample, "dest": "X" * 100_000},
        "very_long_unknown_field_name": {**sample, "k" * 100_000: 1},
        "string_for_number": {**sample, "distance": "719"},
        "string_for_integer": {**sample, "hour": "17"},
        "list_for_number": {**sample, "precip": [0.02]},
        "object_for_number": {**sample, "temp": {"F": 35.1}},
        "boolean_for_number": {**sample, "distance": True},
        "boolean_for_integer": {**sample, "month": False},
        "fraction_for_integer_month": {**sample, "month": 3.5},
        "fraction_for_integer_seats": {**sample, "seats": 191.5},
        "month_above_range": {**sample, "month": 13},
        "month_zero": {**sample, "month": 0},
        "hour_below_range": {**sample, "hour": -1},
        "minute_above_range": {**sample, "minute": 60},
        "negative_distance": {**sample, "distance": -719},
        "zero_distance": {**sample, "distance": 0},
        "humidity_above_100": {**sample, "humid": 150.0},
        "pressure_far_below_range": {**sample, "pressure": 10.0},
        "plane_from_the_future": {**sample, "plane_year": 2100},
        "many_unknown_fields": {**sample, **{f"extra_{i}": 0 for i in range(WIDE)}},
    }
    return [HostileRequest(name, _dumps(record)) for name, record in cases.items()]


def _list_defects(sample: dict[str, Any], max_records: int) -> list[HostileRequest]:
    """Lists of records: empty, too long, mixed good and bad, wrong element types."""
    good = valid_records(3)
    out_of_bounds = {
        name: (10**6 if isinstance(value, (int, float)) and not isinstance(value, bool) else value)
        for name, value in sample.items()
    }
    return [
        HostileRequest("empty_list", b"[]"),
        HostileRequest("good_records_and_one_out_of_range", _dumps([good[0], {**good[1], "month": 40}, good[2]])),
        HostileRequest("good_records_and_one_missing_field", _dumps([good[0], _without(good[1], "origin")])),
        HostileRequest("good_record_and_a_number", _dumps([good[0], 42])),
        HostileRequest("good_record_and_null", _dumps([good[0], None])),
        HostileRequest("list_of_lists", _dumps([good])),
        # 1,000 records, every number out of bounds: 16,000 problems, an error reply of more than 1 MiB.
        HostileRequest("every_number_of_every_record_out_of_range", _dumps([out_of_bounds] * max_records)),
        HostileRequest("one_record_over_max_records", _dumps([sample] * (max_records + 1)), status=413),
    ]


def _transport_defects(good: bytes, limit: int) -> list[HostileRequest]:
    """Right records, wrong envelope: media types, forms, sizes."""
    boundary = "mymodel-boundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="r.json"\r\n'
            f"Content-Type: application/json\r\n\r\n"
        ).encode()
        + good
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return [
        HostileRequest("content_type_text_csv", b"carrier,origin\nUA,EWR\n", {"Content-Type": "text/csv"}, 415),
        HostileRequest("content_type_xml", b"<flight carrier='UA'/>", {"Content-Type": "application/xml"}, 415),
        HostileRequest("content_type_png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {"Content-Type": "image/png"}, 415),
        HostileRequest("json_labelled_as_html", good, {"Content-Type": "text/html"}, 415),
        HostileRequest(
            "form_encoded",
            b"data=" + good.replace(b" ", b"+"),
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
        ),
        HostileRequest("multipart_form", multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, 415),
        HostileRequest(
            "body_over_max_request_size",
            good[:-1] + b" " * (limit + 1 - len(good)) + b"}",
            status=413,
            refused_by_frontend=True,
        ),
    ]


def malformed_requests(config: str | Path = DEFAULT_CONFIG) -> list[HostileRequest]:
    """The corpus: every request here must get its 4xx with a JSON error."""
    sample = sample_record()
    good = _dumps(sample)
    max_records = load_settings(config).serving.max_records
    corpus = [
        *_body_defects(sample, good),
        *_field_defects(sample),
        *_list_defects(sample, max_records),
        *_transport_defects(good, max_request_size()),
    ]
    names = [request.name for request in corpus]
    assert len(names) == len(set(names)), "corpus names must be unique"
    return corpus


def tolerated_requests() -> list[HostileRequest]:
    """Odd but acceptable requests, answered 200 like the sample itself.

    A UTF-8 byte order mark is ignored: RFC 8259 (section 8.1) forbids sending one but lets
    a parser ignore it, and refusing it would only punish Windows tooling. A float with
    no fraction is an integer in JSON Schema (3.0 is a valid month)."""
    sample = sample_record()
    good = _dumps(sample)
    return [
        HostileRequest("utf8_byte_order_mark", b"\xef\xbb\xbf" + good, status=200),
        HostileRequest("no_content_type", good, {}, 200),
        HostileRequest("json_with_charset", good, {"Content-Type": "application/json; charset=utf-8"}, 200),
        HostileRequest("surrounding_whitespace", b"\n\t " + good + b" \r\n", status=200),
        HostileRequest("integral_float_for_integer", _dumps({**sample, "month": float(sample["month"])}), status=200),
    ]
