"""The winner of `make model-bench` served: the same server and request contract (uvicorn, the
handler's PredictionService, one process, one thread for the model) with model.pt in torch
(benchmarks/fastapi_server.py) and with model.onnx in ONNX Runtime (serving/onnx_server.py).
One connection, bodies of 1, 100 and 1,000 test-month records, alternating rounds.

    python -m benchmarks.served_variants --config params.yaml --doc docs/model.md     # make served-model-bench
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.measured import machine, publish
from benchmarks.servers import fastapi_server, module_server
from model import configure_logging
from model.artifact.export import export_model
from model.artifact.onnx_export import export_onnx
from model.base.markdown import block_markers
from model.config import DEFAULT_CONFIG, load_settings
from model.data.prepare import load_table
from model.data.request_records import request_records
from model.data.split import split_rows

log = logging.getLogger(__name__)

BODIES = (1, 100, 1000)
MARKERS = block_markers("served-variants", "make served-model-bench")


@contextlib.contextmanager
def onnx_server(export_dir: Path, workdir: Path) -> Iterator[str]:
    """serving.onnx_server in its own process; its base URL once it answers."""
    with module_server("serving.onnx_server", export_dir, workdir / "onnx-server.log", "/v2/health/ready", 120) as (
        port,
        _,
    ):
        yield f"http://127.0.0.1:{port}"


def latencies(port: int, path: str, body: bytes, seconds: float) -> list[float]:
    """Requests one after another on one keep-alive connection for `seconds` (at least 5)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    found: list[float] = []
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds or len(found) < 5:
            sent = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{path} answered {reply.status}")
            found.append(time.perf_counter() - sent)
    finally:
        connection.close()
    return found


def run(config: Path, rounds: int, seconds: float, doc: Path | None, out: Path | None) -> dict:
    settings = load_settings(config)
    test = split_rows(load_table(settings), "test")
    records = request_records(test.sample(1000, random_state=3), settings.features)
    bodies = {size: json.dumps(records[:size]).encode() for size in BODIES}
    name = settings.model.name
    load_start = os.getloadavg()[0]
    results: dict[str, dict[str, list]] = {"model.pt": {}, "model.onnx": {}}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        export_model(settings.paths.model_dir, work)
        export_onnx(settings.paths.model_dir, work)
        with fastapi_server(work, work / "fastapi", name) as torch_endpoint, onnx_server(work, work) as onnx_url:
            ports = {"model.pt": torch_endpoint.ports[0], "model.onnx": int(onnx_url.rsplit(":", 1)[1])}
            rng = random.Random(0)
            for round_number in range(rounds):
                order = list(ports)
                rng.shuffle(order)
                for variant in order:
                    for size in BODIES:
                        found = latencies(ports[variant], f"/predictions/{name}", bodies[size], seconds)
                        measured = {
                            "p50_ms": 1000 * statistics.median(found),
                            "records_per_s": size * len(found) / sum(found),
                        }
                        results[variant].setdefault(str(size), []).append(measured)
                log.info("round %d/%d done", round_number + 1, rounds)
    facts = {
        "rounds": rounds,
        "seconds": seconds,
        **machine(load_start),
        "model_version": json.loads((settings.paths.model_dir / "config.json").read_text())["version"],
    }
    saved = {"facts": facts, "results": results}
    publish(saved, markdown(saved), out, doc, MARKERS)
    return saved


def markdown(saved: dict) -> str:
    facts, results = saved["facts"], saved["results"]
    lines = [
        f"Model {facts['model_version']}, one connection, {facts['rounds']} alternating rounds of at least "
        f"{facts['seconds']:g} s per server and body on {facts['cpu']} ({facts['cores']} cores, load average "
        f"{facts['load']:.1f} at the start, {facts['load_end']:.1f} at the end). Medians of the rounds; the "
        "ratio is ONNX Runtime against torch within each round (lowest–highest).",
        "",
        "| records per body | p50 ms, model.pt | p50 ms, model.onnx | records/s, model.pt | records/s, model.onnx "
        "| × records/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in BODIES:
        pt, ox = results["model.pt"][str(size)], results["model.onnx"][str(size)]
        ratios = [b["records_per_s"] / a["records_per_s"] for a, b in zip(pt, ox)]
        lines.append(
            f"| {size:,} | {statistics.median(r['p50_ms'] for r in pt):.2f} "
            f"| {statistics.median(r['p50_ms'] for r in ox):.2f} "
            f"| {statistics.median(r['records_per_s'] for r in pt):,.0f} "
            f"| {statistics.median(r['records_per_s'] for r in ox):,.0f} "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per server, body size and round")
    parser.add_argument("--doc", type=Path, default=None, help="write the table between the markers of this page")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/served_variants.json"))
    args = parser.parse_args()
    configure_logging()
    run(args.config, args.rounds, args.seconds, args.doc, args.out)


if __name__ == "__main__":
    main()
