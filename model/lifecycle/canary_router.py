"""The canary's router: in front of TorchServe's inference port, it sends each request to an
explicit version (the candidate for its share of the traffic, else production) and measures
each version's latency and errors on the same live traffic."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model.lifecycle.ports import free_ports


@dataclass
class VersionTraffic:
    """What the router saw of one version."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int, latency_ms: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status < 500:
            self.latencies_ms.append(latency_ms)

    def summary(self) -> dict[str, Any]:
        total = sum(self.statuses.values())
        errors = sum(count for status, count in self.statuses.items() if status >= 500)
        # None, not NaN, before any answer: the summary is JSON (GET /canary), which has no NaN.
        p50, p95 = (float(p) for p in np.percentile(self.latencies_ms, [50, 95])) if self.latencies_ms else (None, None)
        return {
            "requests": total,
            "errors": errors,
            "error_share": errors / total if total else 0.0,
            "p50_ms": p50,
            "p95_ms": p95,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
        }


class Router:
    """Sends `share` of POST /predictions/<name> to the candidate version, the rest to production."""

    def __init__(self, inference_url: str, name: str, production: str, candidate: str, share: float, seed: int = 0):
        self.upstream, self.name = inference_url.rstrip("/"), name
        self.production, self.candidate, self.share = production, candidate, share
        self.random = random.Random(seed)
        self.traffic = {production: VersionTraffic(), candidate: VersionTraffic()}
        self.lock = threading.Lock()
        self.client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route(f"/predictions/{name}", self.predict, methods=["POST"]),
                Route("/canary", self.report, methods=["GET"]),
                Route("/ping", self.ping, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette):
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            self.client = client
            yield

    def upstream_client(self) -> httpx.AsyncClient:
        if self.client is None:
            raise RuntimeError("the upstream client opens with the app's lifespan (serve the app, e.g. with uvicorn)")
        return self.client

    def choose(self) -> str:
        with self.lock:
            return self.candidate if self.random.random() < self.share else self.production

    async def predict(self, request: Request) -> Response:
        version = self.choose()
        headers = {"Content-Type": request.headers.get("content-type", "")}
        started = time.perf_counter()
        try:
            reply = await self.upstream_client().post(
                f"{self.upstream}/predictions/{self.name}/{version}", content=await request.body(), headers=headers
            )
            status, body, kind = reply.status_code, reply.content, reply.headers.get("content-type", "")
        except httpx.HTTPError as error:
            status, body, kind = (
                502,
                json.dumps({"code": 502, "error": f"upstream: {error}"}).encode(),
                "application/json",
            )
        with self.lock:
            self.traffic[version].add(status, 1000 * (time.perf_counter() - started))
        return Response(body, status_code=status, media_type=kind or None, headers={"X-Model-Version": version})

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "production": self.production,
                "candidate": self.candidate,
                "share": self.share,
                "versions": {version: traffic.summary() for version, traffic in self.traffic.items()},
            }

    async def report(self, request: Request) -> Response:
        return JSONResponse(self.summary())

    async def ping(self, request: Request) -> Response:
        reply = await self.upstream_client().get(f"{self.upstream}/ping")
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")


@contextlib.contextmanager
def routing(router: Router, port: int | None = None) -> Iterator[str]:
    """Serve the router on loopback in a background thread; yields its URL; always stops it."""
    port = port or free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(router.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the canary router did not start on port {port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
