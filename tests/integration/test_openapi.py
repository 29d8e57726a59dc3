"""The OpenAPI 3.1 document of the public API (docs/openapi.json): generated from the exported
schema, valid for a real OpenAPI validator, and true of a running server: schemathesis sends
generated requests, valid and invalid, and every answer must be documented, never a 5xx."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from harness.torchserve import torchserve
from model.artifact.openapi import openapi_document
from model.config import ROOT

COMMITTED = ROOT / "docs" / "openapi.json"
V2 = "/v2/"  # the operations the plugin serves, on its own port


def test_the_committed_document_is_the_one_the_schema_generates(schema):
    regenerate = "python -m model.artifact.openapi --export-dir artifacts/export --out docs/openapi.json"
    assert json.loads(COMMITTED.read_text()) == openapi_document(schema), f"docs/openapi.json is stale: {regenerate}"


def test_the_document_is_valid_openapi_3_1():
    document = json.loads(COMMITTED.read_text())
    assert document["openapi"].startswith("3.1")
    validate(document)


@pytest.fixture(scope="module")
def api(archive, plugins, tmp_path_factory):
    with torchserve(archive.parent, tmp_path_factory.mktemp("openapi"), plugins=plugins) as server:
        yield server


def operations() -> list:
    described = schemathesis.openapi.from_dict(json.loads(COMMITTED.read_text()))
    return [result.ok() for result in described.get_all_operations()]


def test_every_operation_is_exercised():
    ids = {operation.definition.raw["operationId"] for operation in operations()}
    assert ids == {"ping", "predict", "explain", "v2_live", "v2_ready", "v2_metadata", "v2_model_ready", "v2_infer"}


def runs() -> list:
    """Each operation with the requests the document allows, and, where it takes input at all
    (GET /ping takes none), with requests that break it."""
    return [
        pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
        for operation in operations()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        if mode is schemathesis.GenerationMode.POSITIVE or operation.label.startswith("POST")
    ]


@pytest.mark.parametrize(("operation", "mode"), runs())
def test_every_answer_is_documented_and_none_is_a_server_error(operation, mode, api):
    """Generated requests for one operation, ones the document allows and (negative mode) ones
    that break it: every status, header and body must be as documented, and none a 5xx."""
    calls = []
    # A v2 request's tensors must name every field once with one shape, which JSON Schema cannot say
    # (the document says it in words): a schema-valid v2 request may be refused, and must be a 400.
    infer_v2 = operation.path.endswith("/infer")
    excluded = [schemathesis.checks.positive_data_acceptance] if infer_v2 else []
    # schemathesis's own rejection check does not count 413 (too many records) as a refusal; the
    # statuses are checked below instead
    excluded.append(schemathesis.checks.negative_data_rejection)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def exercised(case):
        base_url = api.oip_url if operation.path.startswith(V2) else api.inference_url
        response = case.call_and_validate(base_url=base_url, excluded_checks=excluded)
        calls.append(response.status_code)

    exercised()
    print(f"{operation.label} {mode.value}: {len(calls)} requests, statuses {dict(Counter(calls))}")
    assert calls and all(status < 500 for status in calls), calls
    if infer_v2 and mode is schemathesis.GenerationMode.POSITIVE:
        assert set(calls) <= {200, 400}, calls
    if mode is schemathesis.GenerationMode.NEGATIVE:
        assert set(calls) <= {400, 404, 413, 415}, calls  # refused, with the documented error body


def by_id(operation_id: str):
    return next(op for op in operations() if op.definition.raw["operationId"] == operation_id)


def test_v2_infer_answers_generated_records_as_predictions_does(api, schema):
    """Valid v2 requests, which JSON Schema cannot generate on its own: records the document allows
    for /predictions, sent as one tensor per field. Each is answered 200 as documented, with the
    probabilities /predictions gives the same records."""
    metadata = requests.get(f"{api.oip_url}/v2/models/mymodel", timeout=30).json()
    predict, infer = by_id("predict"), by_id("v2_infer")
    target = schema["x-model"]["target"]
    answered = []

    @given(case=predict.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def exercised(case):
        body = case.body
        records = (
            body["instances"]
            if isinstance(body, dict) and "instances" in body
            else body
            if isinstance(body, list)
            else [body]
        )
        inputs = []
        for tensor in metadata["inputs"]:
            data = [record.get(tensor["name"]) for record in records]
            # JSON Schema's integers include 1.0; a tensor of them is FP64, which integer fields take
            floats = tensor["datatype"].startswith(("INT", "UINT")) and any(isinstance(v, float) for v in data)
            inputs.append(
                {
                    "name": tensor["name"],
                    "datatype": "FP64" if floats else tensor["datatype"],
                    "shape": [len(records)],
                    "data": data,
                }
            )
        v2 = infer.Case(
            path_parameters={"model_name": "mymodel"}, body={"inputs": inputs}, media_type="application/json"
        )
        response = v2.call_and_validate(base_url=api.oip_url)
        assert response.status_code == 200, response.text
        outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
        served = requests.post(
            f"{api.inference_url}/predictions/mymodel",
            data=json.dumps(records),
            headers={"Content-Type": "application/json"},
            timeout=30,
        ).json()
        assert outputs[f"{target}_probability"] == pytest.approx([a[f"{target}_probability"] for a in served], abs=1e-6)
        answered.append(len(records))

    exercised()
    print(f"v2 infer from generated records: {len(answered)} requests, {sum(answered)} records")
    assert len(answered) >= 20
