"""The OpenAPI 3.1 document of the public API (docs/openapi.json): generated from the exported
schema, valid for a real OpenAPI validator, and true of a running server: schemathesis sends
generated requests, valid and invalid, and every answer must be documented, never a 5xx."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from model.artifact.openapi import openapi_document
from model.config import ROOT
from model.lifecycle.torchserve import torchserve

COMMITTED = ROOT / "docs" / "openapi.json"
SERVED_HERE = ["ping", "predict", "explain"]  # port 8080; the v2 routes are tested in test_oip.py


def test_the_committed_document_is_the_one_the_schema_generates(schema):
    regenerate = "python -m model.artifact.openapi --export-dir artifacts/export --out docs/openapi.json"
    assert json.loads(COMMITTED.read_text()) == openapi_document(schema), f"docs/openapi.json is stale: {regenerate}"


def test_the_document_is_valid_openapi_3_1():
    document = json.loads(COMMITTED.read_text())
    assert document["openapi"].startswith("3.1")
    validate(document)


@pytest.fixture(scope="module")
def api(archive, tmp_path_factory):
    with torchserve(archive.parent, tmp_path_factory.mktemp("openapi"), extra_env={"TS_OIP_ADDRESS": ""}) as server:
        yield server


def operations() -> list:
    described = schemathesis.openapi.from_dict(json.loads(COMMITTED.read_text()))
    return [result.ok() for result in described.include(operation_id=SERVED_HERE).get_all_operations()]


def runs() -> list:
    """Each operation with the requests the document allows, and, where it takes input at all
    (GET /ping takes none), with requests that break it."""
    return [pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
            for operation in operations()
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
            if mode is schemathesis.GenerationMode.POSITIVE or operation.label.startswith("POST")]


@pytest.mark.parametrize(("operation", "mode"), runs())
def test_every_answer_is_documented_and_none_is_a_server_error(operation, mode, api):
    """Generated requests for one operation, ones the document allows and (negative mode) ones
    that break it: every status, header and body must be as documented, and none a 5xx."""
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def exercised(case):
        response = case.call_and_validate(base_url=api.inference_url)
        calls.append(response.status_code)

    exercised()
    assert calls and all(status < 500 for status in calls), calls
    if mode is schemathesis.GenerationMode.NEGATIVE:
        assert set(calls) <= {400, 404, 413, 415}, calls  # refused, with the documented error body
