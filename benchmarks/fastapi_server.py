"""The familiar baseline: one FastAPI process under uvicorn serving the same model.pt and contract.

    python -m benchmarks.fastapi_server --port 9000 --export-dir artifacts/export

One request is one forward pass, with one torch thread. Validation and answers come
from the handler's own PredictionService, so the baseline differs from TorchServe
only in how requests reach the model, not in what is done with them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request, Response

from handler.service import PredictionService
from model.artifact.export import SCHEMA, TORCHSCRIPT

MAX_BODY_BYTES = 1024 * 1024  # config.properties' max_request_size: larger bodies get a 413
WARMUP_CALLS = 3  # TorchScript optimizes its graph on the first calls, as the handler knows


def late_arrival_service(export_dir: Path) -> PredictionService:
    """model.pt behind the handler's validation, warmed up before the first request."""
    torch.set_num_threads(1)
    model = torch.jit.load(str(export_dir / TORCHSCRIPT), map_location="cpu").eval()
    schema = json.loads((export_dir / SCHEMA).read_text())
    width = len(schema["x-model"]["numeric"])

    @torch.inference_mode()
    def predict(categorical: list[list[str]], numeric: list[list[float]]) -> list[float]:
        values = torch.tensor(numeric, dtype=torch.float32).reshape(len(numeric), width)
        return model(categorical, values).tolist()

    service = PredictionService(schema, predict)
    for _ in range(WARMUP_CALLS):
        service.handle([(json.dumps(service.example()), "application/json")])
    return service


def create_app(export_dir: Path) -> FastAPI:
    """The model loads before the app exists, so the port only opens once predictions can be answered."""
    service = late_arrival_service(export_dir)
    name = json.loads((export_dir / SCHEMA).read_text())["x-model"]["name"]
    app = FastAPI(title=f"{name} (FastAPI baseline)")

    # async and inline: the forward takes well under a millisecond and holds the GIL,
    # so a hop to the thread pool would only add latency to a single-process server.
    @app.post(f"/predictions/{name}")
    async def predictions(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return Response(status_code=413)
        reply = service.handle([(body, request.headers.get("content-type", ""))])[0]
        return Response(reply.body, status_code=reply.status, media_type="application/json")

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "Healthy"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--export-dir", type=Path, required=True, help="model.pt + schema.json")
    args = parser.parse_args()
    # Access log off, as in the tuned TorchServe: a line per request costs throughput.
    uvicorn.run(
        create_app(args.export_dir),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
