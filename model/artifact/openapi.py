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
from typing import Any, Dict, Optional

import yaml

from model.artifact.archive import HANDLER_DIR
from model.artifact.export import SCHEMA

OPENAPI = "3.1.0"


def record_schema(schema: Dict[str, Any]) -> Dict[str, Any]:
    properties = {
        name: {key: value for key, value in spec.items() if key != "examples"}
        for name, spec in schema["properties"].items()
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(schema["required"]),
        "additionalProperties": False,
        "description": schema["title"],
    }


def max_explained_records(model_config: Path = HANDLER_DIR / "model-config.yaml") -> int:
    """The records one /explanations request may hold (the handler's max_explained_records)."""
    return int(yaml.safe_load(model_config.read_text())["handler"]["max_explained_records"])


def error_schema() -> Dict[str, Any]:
    """The one error shape of every error the project's own code answers (handler and v2 plugin)."""
    return {
        "type": "object",
        "required": ["code", "type", "error"],
        "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599, "description": "the HTTP status"},
            "type": {
                "type": "string",
                "pattern": "^[a-z]+(_[a-z]+)*$",
                "description": "stable and machine-readable: invalid_request, bad_header, too_many_records, "
                "unsupported_media_type, not_found, internal_error, not_implemented, ...",
            },
            "error": {
                "type": "string",
                "description": "one sentence: the first problem, followed by "
                '"(and N more problems)" when there are more',
            },
            "errors": {
                "type": "array",
                "maxItems": 50,
                "description": "every problem, at most 50 (always present in the handler's replies, "
                "empty where the error is no field's)",
                "items": {
                    "type": "object",
                    "required": ["record", "field", "reason"],
                    "properties": {
                        "record": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "description": "the record's position in a list (v2: the element's); "
                            "null for a single record or the body",
                        },
                        "field": {
                            "type": "string",
                            "description": "the field (v2: the input), or body, record or a header",
                        },
                        "reason": {"type": "string"},
                    },
                },
            },
            "errors_omitted": {
                "type": "integer",
                "minimum": 1,
                "description": "how many problems `errors` leaves out (only when it does)",
            },
        },
    }


def torchserve_error_schema() -> Dict[str, Any]:
    """TorchServe's own answers before the handler sees a request (no such model, no worker)."""
    return {
        "type": "object",
        "required": ["code", "type", "message"],
        "properties": {"code": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"}},
    }


def answer_schema(facts: Dict[str, Any]) -> Dict[str, Any]:
    target = facts["target"]
    return {
        "type": "object",
        "required": [f"{target}_probability", target, "model_version"],
        "additionalProperties": False,
        "properties": {
            f"{target}_probability": {"type": "number", "minimum": 0, "maximum": 1},
            target: {"type": "boolean", "description": f"{target}_probability at or above the model's threshold"},
            "model_version": {"type": "string"},
        },
    }


def v2_tensor_schema(schema: Dict[str, Any]) -> Dict[str, Any]:
    """One input tensor: a field's values for n records, as JSON data (the binary extension aside)."""
    return {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": list(schema["properties"])},
            "datatype": {
                "type": "string",
                "enum": [
                    "BYTES",
                    "FP64",
                    "FP32",
                    "INT64",
                    "INT32",
                    "INT16",
                    "INT8",
                    "UINT64",
                    "UINT32",
                    "UINT16",
                    "UINT8",
                ],
            },
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 1},
            "data": {"type": "array", "items": {"type": ["string", "number", "null"]}},
            "parameters": {"type": "object"},
        },
    }


REQUEST_ID = {"$ref": "#/components/headers/RequestId"}
REQUEST_ID_HEADER = {
    "description": "the request's id, as the request log records it: on the v2 routes the client's "
    "X-Request-ID when it is 1-128 of letters, digits and ._:/+=@-, else a new UUID; on "
    "TorchServe's own routes always the UUID TorchServe gave the request (the client's "
    "own is logged beside it)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}


def json_body(reference: str) -> Dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": reference}}}}


def refusals(statuses: Dict[str, str], error: str = "Error") -> Dict[str, Any]:
    return {
        status: {"description": text, **json_body(f"#/components/schemas/{error}")} for status, text in statuses.items()
    }


def with_request_id(paths: Dict[str, Any]) -> Dict[str, Any]:
    """Every response of every operation documents the X-Request-ID header."""
    for operations in paths.values():
        for operation in operations.values():
            for response in operation["responses"].values():
                response["headers"] = {"X-Request-ID": REQUEST_ID}
    return paths


def openapi_document(schema: Dict[str, Any], explained: Optional[int] = None) -> Dict[str, Any]:
    """explained: the records one /explanations request may hold (default: the handler's setting)."""
    facts = schema["x-model"]
    name, most = facts["name"], facts["max_records"]
    explained = max_explained_records() if explained is None else explained
    model = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "enum": [name]}}
    records = {
        "oneOf": [
            {"$ref": "#/components/schemas/Record"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1, "maxItems": most},
            {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "instances": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Record"},
                        "minItems": 1,
                        "maxItems": most,
                    }
                },
                "description": 'KServe\'s v1 body: answered {"predictions": [...]}',
            },
        ]
    }
    answers = {
        "oneOf": [
            {"$ref": "#/components/schemas/Answer"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}},
            {
                "type": "object",
                "required": ["predictions"],
                "additionalProperties": False,
                "properties": {"predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}}},
            },
        ]
    }
    over_limit = (
        "; a body over max_request_size gets TorchServe's own 413 with an empty body, before the handler sees it"
    )
    media = (
        "a Content-Type other than JSON (accepted: application/json, any +json type, text/json, text/plain, "
        "application/octet-stream, or none)"
    )
    bad_request = {
        "400": "a malformed body or a record with problems: each named by record and field",
        "413": f"more than {most} records (too_many_records){over_limit}",
        "415": media,
        "500": "the model failed on this request (internal_error): this request alone",
    }
    bad_explanation = {
        **bad_request,
        "413": f"more than {explained} records (too_many_records){over_limit}",
        "501": "explanations are not available (not_implemented)",
    }
    unavailable = {
        "404": {
            "description": "no model of that name (TorchServe's own answer)",
            **json_body("#/components/schemas/TorchServeError"),
        },
        "503": {
            "description": "no worker can take the request (TorchServe's own answer)",
            **json_body("#/components/schemas/TorchServeError"),
        },
    }
    v2 = [{"url": "http://localhost:8083", "description": "Open Inference Protocol v2"}]
    v2_unknown = {"404": "no model (or version) of that name"}
    return {
        "openapi": OPENAPI,
        "info": {
            "title": f"{name} prediction API",
            "version": "1",
            "description": f"Predicts {facts['target']}_probability from one record or a list of up to "
            f"{most}. Generated from the model's schema.json.",
        },
        "servers": [{"url": "http://localhost:8080", "description": "predictions and explanations"}],
        "paths": with_request_id(
            {
                "/ping": {
                    "get": {
                        "operationId": "ping",
                        "responses": {
                            "200": {
                                "description": "the frontend is up "
                                "(readiness is the model's workers: see the v2 routes)",
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "type": "object",
                                            "required": ["status"],
                                            "properties": {"status": {"type": "string"}},
                                        }
                                    }
                                },
                            }
                        },
                    }
                },
                "/predictions/{model_name}": {
                    "post": {
                        "operationId": "predict",
                        "parameters": [model],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": records}}},
                        "responses": {
                            "200": {
                                "description": "one answer per record, in the shape and order sent",
                                "content": {"application/json": {"schema": answers}},
                            },
                            **refusals(bad_request),
                            **unavailable,
                        },
                    }
                },
                "/explanations/{model_name}": {
                    "post": {
                        "operationId": "explain",
                        "parameters": [model],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": records}}},
                        "responses": {
                            "200": {
                                "description": "per record: the answer, the reference record's, and "
                                "integrated-gradient attributions per field",
                                "content": {"application/json": {"schema": {}}},
                            },
                            **refusals(bad_explanation),
                            **unavailable,
                        },
                    }
                },
                "/v2/health/live": {
                    "get": {
                        "operationId": "v2_live",
                        "servers": v2,
                        "responses": {"200": {"description": "the server is up"}},
                    }
                },
                "/v2/health/ready": {
                    "get": {
                        "operationId": "v2_ready",
                        "servers": v2,
                        "responses": {
                            "200": {"description": "every model is ready", **json_body("#/components/schemas/V2Ready")},
                            "400": {
                                "description": "a model is not ready: not every worker of it is READY",
                                **json_body("#/components/schemas/V2Ready"),
                            },
                        },
                    }
                },
                "/v2/models/{model_name}": {
                    "get": {
                        "operationId": "v2_metadata",
                        "servers": v2,
                        "parameters": [model],
                        "responses": {
                            "200": {
                                "description": "inputs and outputs",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            },
                            **refusals(v2_unknown),
                        },
                    }
                },
                "/v2/models/{model_name}/ready": {
                    "get": {
                        "operationId": "v2_model_ready",
                        "servers": v2,
                        "parameters": [model],
                        "responses": {
                            "200": {"description": "the model is ready", **json_body("#/components/schemas/V2Ready")},
                            "400": {
                                "description": "not every worker of the model is READY",
                                **json_body("#/components/schemas/V2Ready"),
                            },
                            **refusals(v2_unknown),
                        },
                    }
                },
                "/v2/models/{model_name}/infer": {
                    "post": {
                        "operationId": "v2_infer",
                        "servers": v2,
                        "parameters": [model],
                        "description": "One tensor per field, all of shape [n] (n records): the metadata route lists "
                        "them. JSON Schema cannot say that every field comes once and every shape is "
                        "the same; the server names what breaks either.",
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["inputs"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "id": {"type": "string"},
                                            "parameters": {"type": "object"},
                                            "inputs": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/V2Tensor"},
                                                "minItems": 1,
                                                "maxItems": len(schema["properties"]),
                                            },
                                            "outputs": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "required": ["name"],
                                                    "properties": {
                                                        "name": {
                                                            "type": "string",
                                                            "enum": [f"{facts['target']}_probability", facts["target"]],
                                                        }
                                                    },
                                                },
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        "responses": {
                            "200": {
                                "description": "one output tensor per requested output",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            },
                            **refusals(
                                {
                                    "400": "a malformed request, tensor or Inference-Header-Content-Length, named",
                                    "413": f"a body over the size limit, or more than {most} "
                                    "records (too_many_records)",
                                    "415": media,
                                    **v2_unknown,
                                    "500": "the model failed on this request (internal_error)",
                                    "503": "no worker can take the request",
                                }
                            ),
                        },
                    }
                },
            }
        ),
        "components": {
            "schemas": {
                "Record": record_schema(schema),
                "Answer": answer_schema(facts),
                "Error": error_schema(),
                "TorchServeError": torchserve_error_schema(),
                "V2Tensor": v2_tensor_schema(schema),
                "V2Ready": {
                    "type": "object",
                    "required": ["ready"],
                    "properties": {"ready": {"type": "boolean"}, "name": {"type": "string"}},
                },
            },
            "headers": {"RequestId": REQUEST_ID_HEADER},
        },
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
