"""Canary releases: a candidate version takes a share of live traffic and is promoted only if it
is not worse than production; otherwise it is rolled back automatically.

    # the router alone, in front of a running TorchServe (clients call it instead of :8080)
    python -m model.canary route --inference http://127.0.0.1:8080 --candidate 3 --port 8090
    # a whole canary: load the candidate, route replayed labelled traffic, judge, promote or roll back
    python -m model.canary run --candidate 3 --inference http://127.0.0.1:8080 --management http://127.0.0.1:8081

Why a router: TorchServe serves versions side by side (/predictions/<name>/<version>) but
has no traffic split between them; a handler cannot hand a request to another version;
splitting in clients needs every client to cooperate. A small router in front of the
inference port is where the split naturally lives (KServe's canaryTrafficPercent does the
same in its ingress), and it sees every answer, so it also measures each version's
latency and errors on the same live traffic. It sends every request to an explicit
version, so the measurements never mix them up.

The judgement has two parts (params.yaml `canary`): on the canary traffic, the
candidate's p95 latency and error share against production's; on the most recent
labelled data, each version's ROC AUC with every record scored by both through
TorchServe (a fair comparison: the same records, not the router's random halves).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import requests
import uvicorn
from sklearn.metrics import roc_auc_score
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data import SPLIT, load_table
from model.features import request_records
from model.registry import Registry, RegistryError, ServedVersions, ensure_loaded, promote
from model.server import free_ports
from model.sources import TARGET

log = logging.getLogger(__name__)


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
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {"requests": total,
                "errors": errors, "error_share": errors / total if total else 0.0,
                "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
                "statuses": {str(status): count for status, count in sorted(self.statuses.items())}}


class Router:
    """Sends `share` of POST /predictions/<name> to the candidate version, the rest to production."""

    def __init__(self, inference_url: str, name: str, production: str, candidate: str, share: float,
                 seed: int = 0):
        self.upstream, self.name = inference_url.rstrip("/"), name
        self.production, self.candidate, self.share = production, candidate, share
        self.random = random.Random(seed)
        self.traffic = {production: VersionTraffic(), candidate: VersionTraffic()}
        self.lock = threading.Lock()
        self.client: httpx.AsyncClient | None = None
        self.app = Starlette(routes=[
            Route(f"/predictions/{name}", self.predict, methods=["POST"]),
            Route("/canary", self.report, methods=["GET"]),
            Route("/ping", self.ping, methods=["GET"]),
        ], lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette):
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            self.client = client
            yield

    def choose(self) -> str:
        with self.lock:
            return self.candidate if self.random.random() < self.share else self.production

    async def predict(self, request: Request) -> Response:
        version = self.choose()
        headers = {"Content-Type": request.headers.get("content-type", "")}
        started = time.perf_counter()
        try:
            reply = await self.client.post(f"{self.upstream}/predictions/{self.name}/{version}",
                                           content=await request.body(), headers=headers)
            status, body, kind = reply.status_code, reply.content, reply.headers.get("content-type", "")
        except httpx.HTTPError as error:
            status, body, kind = 502, json.dumps({"code": 502, "error": f"upstream: {error}"}).encode(), \
                "application/json"
        with self.lock:
            self.traffic[version].add(status, 1000 * (time.perf_counter() - started))
        return Response(body, status_code=status, media_type=kind or None,
                        headers={"X-Model-Version": version})

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"production": self.production, "candidate": self.candidate, "share": self.share,
                    "versions": {version: traffic.summary() for version, traffic in self.traffic.items()}}

    async def report(self, request: Request) -> Response:
        return JSONResponse(self.summary())

    async def ping(self, request: Request) -> Response:
        reply = await self.client.get(f"{self.upstream}/ping")
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")


@contextlib.contextmanager
def routing(router: Router, port: int | None = None) -> Iterator[str]:
    """Serve the router on loopback in a background thread; yields its URL; always stops it."""
    port = port or free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(router.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
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


def recent_labelled(settings: Settings) -> pd.DataFrame:
    """The most recent labelled data the pipeline holds: its test months."""
    table = load_table(settings)
    return table[table[SPLIT] == "test"]


def score(inference_url: str, name: str, version: str, records: list[dict[str, Any]], chunk: int = 500
          ) -> np.ndarray:
    """One version's probabilities for every record, through TorchServe."""
    probabilities: list[float] = []
    key = None
    for start in range(0, len(records), chunk):
        reply = requests.post(f"{inference_url.rstrip('/')}/predictions/{name}/{version}",
                              json=records[start:start + chunk], timeout=120)
        reply.raise_for_status()
        answers = reply.json()
        key = key or next(k for k in answers[0] if k.endswith("_probability"))
        probabilities.extend(answer[key] for answer in answers)
    return np.asarray(probabilities)


@dataclass(frozen=True)
class Verdict:
    candidate: str
    production: str
    promoted: bool
    reasons: list[str]
    traffic: dict[str, Any]
    roc_auc: dict[str, float]


def judge(settings: Settings, traffic: dict[str, Any], roc_auc: dict[str, float]) -> tuple[bool, list[str]]:
    """Not worse than production on the model metric and on latency and errors; the reasons either way."""
    rules = settings.canary
    production, candidate = traffic["production"], traffic["candidate"]
    seen = traffic["versions"]
    reasons, passed = [], True
    floor = roc_auc[production] - rules.roc_auc_tolerance
    ok = roc_auc[candidate] >= floor
    passed &= ok
    reasons.append(f"ROC AUC {roc_auc[candidate]:.4f} vs production {roc_auc[production]:.4f} "
                   f"(floor {floor:.4f}): {'ok' if ok else 'worse'}")
    if seen[candidate]["requests"] == 0:
        passed = False
        reasons.append("the candidate received no canary traffic")
    else:
        ceiling = seen[production]["p95_ms"] * rules.latency_ratio + rules.latency_slack_ms
        ok = seen[candidate]["p95_ms"] <= ceiling
        passed &= ok
        reasons.append(f"p95 {seen[candidate]['p95_ms']:.1f} ms vs production {seen[production]['p95_ms']:.1f} ms "
                       f"(ceiling {ceiling:.1f} ms): {'ok' if ok else 'slower'}")
        ok = seen[candidate]["error_share"] <= seen[production]["error_share"]
        passed &= ok
        reasons.append(f"5xx share {seen[candidate]['error_share']:.2%} vs production "
                       f"{seen[production]['error_share']:.2%}: {'ok' if ok else 'more errors'}")
    return passed, reasons


def replay(router_url: str, name: str, records: list[dict[str, Any]], count: int, concurrency: int) -> None:
    """Single-record prediction requests through the router, as live clients would send them."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
    session.mount("http://", adapter)

    def send(index: int) -> int:
        return session.post(f"{router_url}/predictions/{name}", json=records[index % len(records)],
                            timeout=60).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(count)))


def run_canary(settings: Settings, registry: Registry, candidate: int, inference_url: str,
               served: ServedVersions, labelled: pd.DataFrame | None = None, seed: int | None = None) -> Verdict:
    """Load the candidate beside production, route a share of replayed traffic to it, judge, then
    promote it (new default, registry production) or roll it back (unloaded, registry archived)."""
    production = registry.production()
    if production is None:
        raise RegistryError(f"{registry.name} has no production version to compare with")
    chosen = registry.get(candidate)
    ensure_loaded(served, production, 2)
    served.set_default(production.served_as)
    ensure_loaded(served, chosen, 1)

    labelled = recent_labelled(settings) if labelled is None else labelled
    records = request_records(labelled, settings.features)
    labels = labelled[TARGET].to_numpy()
    rules = settings.canary
    router = Router(inference_url, registry.name, production.served_as, chosen.served_as, rules.share,
                    settings.seed if seed is None else seed)
    with routing(router) as router_url:
        replay(router_url, registry.name, records, rules.requests, rules.concurrency)
    traffic = router.summary()
    roc_auc = {version: float(roc_auc_score(labels, score(inference_url, registry.name, version, records)))
               for version in (production.served_as, chosen.served_as)}
    passed, reasons = judge(settings, traffic, roc_auc)
    detail = {"traffic": traffic, "roc_auc": roc_auc, "reasons": reasons, "labelled_rows": len(records)}
    registry.record(chosen.version, "canary", detail)
    if passed:
        promote(registry, chosen.version, served, {"canary": reasons})
    else:
        if served.default() != chosen.served_as:
            served.unload(chosen.served_as)
        registry.reject(chosen.version, {"canary": reasons})
    for reason in reasons:
        log.info("canary %s: %s", chosen.served_as, reason)
    log.info("version %s %s", chosen.served_as, "promoted" if passed else "rolled back")
    return Verdict(chosen.served_as, production.served_as, passed, reasons, traffic, roc_auc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    route = commands.add_parser("route", help="serve the router in front of a running TorchServe")
    run = commands.add_parser("run", help="a whole canary: route replayed traffic, judge, promote or roll back")
    for command in (route, run):
        command.add_argument("--candidate", type=int, required=True, help="registry version")
        command.add_argument("--inference", default="http://127.0.0.1:8080", help="TorchServe inference URL")
    route.add_argument("--port", type=int, default=8090)
    route.add_argument("--share", type=float, default=None, help="candidate share (default: params canary.share)")
    run.add_argument("--management", default="http://127.0.0.1:8081", help="TorchServe management URL")
    run.add_argument("--data", type=Path, default=None,
                     help="labelled CSV/Parquet to replay (default: the pipeline's test months)")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    registry = Registry.from_settings(settings)
    try:
        if args.command == "route":
            production = registry.production()
            if production is None:
                raise RegistryError(f"{registry.name} has no production version")
            router = Router(args.inference, registry.name, production.served_as, registry.get(args.candidate)
                            .served_as, args.share or settings.canary.share, settings.seed)
            uvicorn.run(router.app, host="127.0.0.1", port=args.port, log_level="warning")
        else:
            labelled = None
            if args.data is not None:
                labelled = pd.read_parquet(args.data) if args.data.suffix == ".parquet" else pd.read_csv(args.data)
            verdict = run_canary(settings, registry, args.candidate, args.inference,
                                 ServedVersions(args.management, registry.name), labelled)
            print(json.dumps(asdict(verdict), indent=2))
    except RegistryError as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
