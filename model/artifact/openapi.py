"""The public API as an OpenAPI 3.1 document, generated from the exported schema.json so that it
cannot drift from what the handler checks: predictions, explanations, ping (port 8080) and the
Open Inference Protocol v2 routes (port 8083).

    python -m model.artifact.openapi --export-dir artifacts/export --out docs/openapi.json

The request record is schema.json's JSON Schema (2020-12, which OpenAPI 3.1 uses as it is)
without its examples, which come from the training data: the document depends on the
features in params.yaml, not on the data a model was trained on.
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from model.artifact.export import SCHEMA

OPENAPI = "3.1.0"


def record_schema(schema: Dict[str, Any]) -> Dict[str, Any]:
    properties = {name: {key: value for key, value in spec.items() if key != "examples"}
                  for name, spec in schema["properties"].items()}
    return {"type": "object", "properties": properties, "required": list(schema["required"]),
            "additionalProperties": False, "description": schema["title"]}


def error_schema() -> Dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "error", "errors"],
        "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599},
            "error": {"type": "string", "description": "every problem, in one sentence each"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["record", "field", "reason"],
                "properties": {
                    "record": {"type": ["integer", "null"], "minimum": 0,
                               "description": "the record's position in a list; null for a single record"},
                    "field": {"type": "string", "description": "the field, or body / record"},
                    "reason": {"type": "string"}}}}},
    }


def torchserve_error_schema() -> Dict[str, Any]:
    """TorchServe's own answers before the handler sees a request (no such model, no worker)."""
    return {"type": "object", "required": ["code", "type", "message"],
            "properties": {"code": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"}}}


def answer_schema(facts: Dict[str, Any]) -> Dict[str, Any]:
    target = facts["target"]
    return {"type": "object", "required": [f"{target}_probability", target, "model_version"],
            "additionalProperties": False,
            "properties": {f"{target}_probability": {"type": "number", "minimum": 0, "maximum": 1},
                           target: {"type": "boolean",
                                    "description": f"{target}_probability at or above the model's threshold"},
                           "model_version": {"type": "string"}}}


def json_body(reference: str) -> Dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": reference}}}}


def refusals(statuses: Dict[str, str]) -> Dict[str, Any]:
    return {status: {"description": text, **json_body("#/components/schemas/Error")}
            for status, text in statuses.items()}


def openapi_document(schema: Dict[str, Any]) -> Dict[str, Any]:
    facts = schema["x-model"]
    name, most = facts["name"], facts["max_records"]
    model = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "enum": [name]}}
    records = {"oneOf": [
        {"$ref": "#/components/schemas/Record"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1, "maxItems": most},
        {"type": "object", "required": ["instances"], "additionalProperties": False,
         "properties": {"instances": {"type": "array", "items": {"$ref": "#/components/schemas/Record"},
                                      "minItems": 1, "maxItems": most}},
         "description": "KServe's v1 body: answered {\"predictions\": [...]}"}]}
    answers = {"oneOf": [
        {"$ref": "#/components/schemas/Answer"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}},
        {"type": "object", "required": ["predictions"], "additionalProperties": False,
         "properties": {"predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}}}}]}
    bad_request = {"400": "a malformed body or a record with problems: each named by record and field",
                   "413": f"more than {most} records, or a body over the size limit",
                   "415": "a Content-Type other than JSON"}
    unavailable = {"404": {"description": "no model of that name (TorchServe's own answer)",
                           **json_body("#/components/schemas/TorchServeError")},
                   "503": {"description": "no worker can take the request (TorchServe's own answer)",
                           **json_body("#/components/schemas/TorchServeError")}}
    v2 = [{"url": "http://localhost:8083", "description": "Open Inference Protocol v2"}]
    return {
        "openapi": OPENAPI,
        "info": {"title": f"{name} prediction API",
                 "version": "1",
                 "description": f"Predicts {facts['target']}_probability from one record or a list of up to "
                                f"{most}. Generated from the model's schema.json."},
        "servers": [{"url": "http://localhost:8080", "description": "predictions and explanations"}],
        "paths": {
            "/ping": {"get": {"operationId": "ping", "responses": {"200": {
                "description": "the frontend is up (readiness is the model's workers: see the v2 routes)",
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}}}}}}},
            "/predictions/{model_name}": {"post": {
                "operationId": "predict", "parameters": [model],
                "requestBody": {"required": True, "content": {"application/json": {"schema": records}}},
                "responses": {"200": {"description": "one answer per record, in the shape and order sent",
                                      "content": {"application/json": {"schema": answers}}},
                              **refusals(bad_request), **unavailable}}},
            "/explanations/{model_name}": {"post": {
                "operationId": "explain", "parameters": [model],
                "requestBody": {"required": True, "content": {"application/json": {"schema": records}}},
                "responses": {"200": {"description": "per record: the answer, the reference record's, and "
                                                     "integrated-gradient attributions per field",
                                      "content": {"application/json": {"schema": {}}}},
                              **refusals({**bad_request, "501": "explanations are not available"}),
                              **unavailable}}},
            "/v2/health/live": {"get": {"operationId": "v2_live", "servers": v2,
                                        "responses": {"200": {"description": "the server is up"}}}},
            "/v2/health/ready": {"get": {"operationId": "v2_ready", "servers": v2,
                                         "responses": {"200": {"description": "every model is ready"}}}},
            "/v2/models/{model_name}": {"get": {"operationId": "v2_metadata", "servers": v2, "parameters": [model],
                                                "responses": {"200": {"description": "inputs and outputs",
                                                                      "content": {"application/json": {
                                                                          "schema": {"type": "object"}}}}}}},
            "/v2/models/{model_name}/ready": {"get": {"operationId": "v2_model_ready", "servers": v2,
                                                      "parameters": [model],
                                                      "responses": {"200": {"description": "the model is ready"}}}},
            "/v2/models/{model_name}/infer": {"post": {
                "operationId": "v2_infer", "servers": v2, "parameters": [model],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["inputs"],
                    "properties": {"id": {"type": "string"}, "inputs": {"type": "array"},
                                   "outputs": {"type": "array"}}}}}},
                "responses": {"200": {"description": "one output tensor per requested output",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **refusals({"400": "a malformed request or tensor, named"})}}},
        },
        "components": {"schemas": {"Record": record_schema(schema), "Answer": answer_schema(facts),
                                   "Error": error_schema(), "TorchServeError": torchserve_error_schema()}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", required=True, type=Path, help="holds schema.json")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    document = openapi_document(json.loads((args.export_dir / SCHEMA).read_text()))
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
