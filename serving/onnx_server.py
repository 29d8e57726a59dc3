"""The model without TorchServe and without torch: model.onnx in ONNX Runtime behind the project's
own request contract, on the Open Inference Protocol v2 routes KServe and Triton clients call.

    python -m serving.onnx_server --export-dir artifacts/export --port 9000

Validation, errors and answers come from the handler's PredictionService (handler/service.py,
torch-free); only the forward pass differs from TorchServe's: ONNX Runtime with one thread.
The routes: /v2/health/live, /v2/health/ready, /v2/models/<name>[/ready], POST
/v2/models/<name>/infer, and the native POST /predictions/<name>. The port opens once the
model answers. Bounds: open connections (uvicorn's limit_concurrency, a 503 beyond it), bytes per
body (a 413), seconds to receive a body (a 408), idle keep-alive seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response

from handler.service import PREDICT, V2_INFER, V2_METADATA, PredictionService
from model.artifact.predict import ONNX_MODEL, OnnxModel

MAX_BODY_BYTES = 1024 * 1024  # config.properties' max_request_size
BODY_SECONDS = 10.0  # a body not received in this time gets a 408
MAX_CONNECTIONS = 256  # open connections and requests in progress; more get a 503
KEEP_ALIVE_SECONDS = 5
WARMUP_CALLS = 3
BINARY_HEADER = "inference-header-content-length"  # the v2 binary-data extension


def error(status: int, kind: str, sentence: str) -> Response:
    """The project's one error shape."""
    body = {"code": status, "type": kind, "error": sentence, "errors": []}
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def onnx_service(export_dir: Path) -> PredictionService:
    """model.onnx behind the handler's validation, warmed up before the first request."""
    model = OnnxModel(Path(export_dir) / ONNX_MODEL, threads=1)
    service = PredictionService(model.schema, model)
    for _ in range(WARMUP_CALLS):
        service.handle([(json.dumps(service.example()), "application/json")])
    return service


async def read_body(request: Request, max_bytes: int, seconds: float) -> bytes | Response:
    """The body, or the error reply when it is too large or too slow to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return error(413, "payload_too_large", f"the body is {declared} bytes; at most {max_bytes} are accepted")

    async def receive() -> bytes | None:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        body = await asyncio.wait_for(receive(), seconds)
    except asyncio.TimeoutError:
        return error(408, "timeout", f"the body did not arrive within {seconds:g} seconds")
    if body is None:
        return error(413, "payload_too_large", f"the body is over {max_bytes} bytes")
    return body


def create_app(export_dir: Path, max_body_bytes: int = MAX_BODY_BYTES, body_seconds: float = BODY_SECONDS) -> FastAPI:
    service = onnx_service(export_dir)
    name = service.name
    app = FastAPI(title=f"{name} (ONNX Runtime)", openapi_url=None, docs_url=None, redoc_url=None)

    async def answer(request: Request, route: str) -> Response:
        body = await read_body(request, max_body_bytes, body_seconds)
        if isinstance(body, Response):
            return body
        length = request.headers.get(BINARY_HEADER)
        json_length = int(length) if length is not None and length.isdigit() else None
        reply = service.handle([(body, request.headers.get("content-type", ""), route, json_length)])[0]
        return Response(reply.body, status_code=reply.status, media_type="application/json")

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    @app.get(f"/v2/models/{name}/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}  # the port opens only after the model has answered

    @app.get(f"/v2/models/{name}")
    async def metadata(request: Request) -> Response:
        return await answer(request, V2_METADATA)

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> Response:
        return await answer(request, V2_INFER)

    @app.post(f"/predictions/{name}")
    async def predictions(request: Request) -> Response:
        return await answer(request, PREDICT)

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> Response:
        return error(404, "not_found", f"{request.method} {request.url.path} is not a route of this server")

    @app.exception_handler(405)
    async def not_allowed(request: Request, _: Exception) -> Response:
        return error(405, "method_not_allowed", f"{request.url.path} does not take {request.method}")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", type=Path, required=True, help="the folder with model.onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    parser.add_argument("--body-seconds", type=float, default=BODY_SECONDS)
    args = parser.parse_args()
    app = create_app(args.export_dir, args.max_body_bytes, args.body_seconds)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        limit_concurrency=args.max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
