"""Canary releases: a candidate version takes a share of live traffic and is promoted only if it
is not worse than production; otherwise it is rolled back automatically.

    # the router alone, in front of a running TorchServe (clients call it instead of :8080)
    python -m model.lifecycle.canary route --inference http://127.0.0.1:8080 --candidate 3 --port 8090
    # a whole canary: load the candidate, route replayed labelled traffic, judge, promote or roll back
    python -m model.lifecycle.canary run --candidate 3 --inference http://127.0.0.1:8080 --management http://127.0.0.1:8081

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
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
import uvicorn
from sklearn.metrics import roc_auc_score

from model import configure_logging
from model.base.tables import read_table
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.prepare import load_table
from model.data.request_records import request_records
from model.data.sources import TARGET
from model.data.split import split_rows
from model.lifecycle.canary_router import Router, routing
from model.lifecycle.canary_verdict import Verdict, judge
from model.lifecycle.registry import CANARY, CANDIDATE, Registry, RegistryError
from model.lifecycle.release import ensure_loaded, promote
from model.lifecycle.torchserve_versions import TorchServeVersions

log = logging.getLogger(__name__)


def recent_labelled(settings: Settings) -> pd.DataFrame:
    """The most recent labelled data the pipeline holds: its test months."""
    table = load_table(settings)
    return split_rows(table, "test")


def score(inference_url: str, name: str, version: str, records: list[dict[str, Any]], chunk: int = 500) -> np.ndarray:
    """One version's probabilities for every record, through TorchServe."""
    probabilities: list[float] = []
    key = None
    for start in range(0, len(records), chunk):
        reply = requests.post(
            f"{inference_url.rstrip('/')}/predictions/{name}/{version}",
            json=records[start : start + chunk],
            timeout=120,
        )
        reply.raise_for_status()
        answers = reply.json()
        key = key or next(k for k in answers[0] if k.endswith("_probability"))
        probabilities.extend(answer[key] for answer in answers)
    return np.asarray(probabilities)


def replay(router_url: str, name: str, records: list[dict[str, Any]], count: int, concurrency: int) -> None:
    """Single-record prediction requests through the router, as live clients would send them."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
    session.mount("http://", adapter)

    def send(index: int) -> int:
        return session.post(
            f"{router_url}/predictions/{name}", json=records[index % len(records)], timeout=60
        ).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(count)))


def run_canary(
    settings: Settings,
    registry: Registry,
    candidate: int,
    inference_url: str,
    served: TorchServeVersions,
    labelled: pd.DataFrame | None = None,
    seed: int | None = None,
) -> Verdict:
    """Load the candidate beside production, route a share of replayed traffic to it, judge, then
    promote it (new default, registry production) or roll it back (unloaded, registry archived)."""
    production = registry.production()
    if production is None:
        raise RegistryError(f"{registry.name} has no production version to compare with")
    chosen = registry.get(candidate)
    if chosen.status != CANDIDATE:
        raise RegistryError(
            f"{registry.name} version {chosen.version} is {chosen.status}: only a candidate goes "
            "through a canary (register the model again for a new one)"
        )
    ensure_loaded(registry, served, production, 2)
    served.set_default(production.torchserve_version)
    ensure_loaded(registry, served, chosen, 1)

    labelled = recent_labelled(settings) if labelled is None else labelled
    records = request_records(labelled, settings.features)
    labels = labelled[TARGET].to_numpy()
    rules = settings.canary
    router = Router(
        inference_url,
        registry.name,
        production.torchserve_version,
        chosen.torchserve_version,
        rules.share,
        settings.seed if seed is None else seed,
    )
    with routing(router) as router_url:
        replay(router_url, registry.name, records, rules.requests, rules.concurrency)
    traffic = router.summary()
    roc_auc = {
        version: float(roc_auc_score(labels, score(inference_url, registry.name, version, records)))
        for version in (production.torchserve_version, chosen.torchserve_version)
    }
    passed, reasons = judge(settings, traffic, roc_auc)
    detail = {
        "passed": passed,
        "against": production.version,
        "traffic": traffic,
        "roc_auc": roc_auc,
        "reasons": reasons,
        "labelled_rows": len(records),
    }
    registry.record(chosen.version, CANARY, detail)  # the gate the registry asks of a promotion
    if passed:
        promote(registry, chosen.version, served, {"canary": reasons})
    else:
        if served.default() != chosen.torchserve_version:
            served.unload(chosen.torchserve_version)
        registry.reject(chosen.version, {"canary": reasons})
    for reason in reasons:
        log.info("canary %s: %s", chosen.torchserve_version, reason)
    log.info("version %s %s", chosen.torchserve_version, "promoted" if passed else "rolled back")
    return Verdict(chosen.torchserve_version, production.torchserve_version, passed, reasons, traffic, roc_auc)


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
    run.add_argument(
        "--data", type=Path, default=None, help="labelled CSV/Parquet to replay (default: the pipeline's test months)"
    )
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    registry = Registry.from_settings(settings)
    try:
        if args.command == "route":
            production = registry.production()
            if production is None:
                raise RegistryError(f"{registry.name} has no production version")
            router = Router(
                args.inference,
                registry.name,
                production.torchserve_version,
                registry.get(args.candidate).torchserve_version,
                args.share or settings.canary.share,
                settings.seed,
            )
            uvicorn.run(router.app, host="127.0.0.1", port=args.port, log_level="warning")
        else:
            labelled = None
            if args.data is not None:
                labelled = read_table(args.data)
            verdict = run_canary(
                settings,
                registry,
                args.candidate,
                args.inference,
                TorchServeVersions(args.management, registry.name),
                labelled,
            )
            print(json.dumps(asdict(verdict), indent=2))
    except RegistryError as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
