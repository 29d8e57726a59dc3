"""Capacity benchmark: what the tuned TorchServe buys over its defaults, a familiar FastAPI server and the bare model.

    python -m benchmarks.bench --config params.yaml [--duration 10] [--out-dir reports/bench]

In one run on one machine, each configuration serves the same trained model and
answers single-record requests (real test-month flights, rotating) from wrk at
fixed concurrency levels: throughput, latency percentiles, errors, CPU per request and the
memory of the server's whole process tree under load; then bodies of 10, 100 and 1,000
records (records/s), and the CPU it spends idle. The in-process forward of
model.pt is the physical limit. Every server runs on free loopback ports and is
stopped afterwards, whatever happens. Writes bench.json, bench.md and plots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks.bench_report import capacity_summary, write_report
from benchmarks.memory import ProcessTreeMemory, process_tree
from benchmarks.servers import Endpoint, defaults_torchserve, fastapi_server, tuned_torchserve
from benchmarks.wrk import run_wrk, write_script, wrk_command
from handler.frontend.build_plugin import build_plugin
from loadtest.payloads import real_records
from model import configure_logging
from model.base.markdown import block_markers, replace_block
from model.config import DEFAULT_CONFIG, ROOT, load_settings
from model.data.prepare import load_table

log = logging.getLogger(__name__)

CONFIGURATIONS = {
    "tuned": "TorchServe, tuned",
    "defaults": "TorchServe, defaults",
    "fastapi": "FastAPI + uvicorn",
    "forward": "model.pt forward",
}
SERVERS = ("tuned", "defaults", "fastapi")


@dataclass(frozen=True)
class BenchPlan:
    concurrency: tuple[int, ...] = (1, 16, 64)
    seconds: int = 10  # measured per point (wrk counts whole seconds)
    warmup_seconds: int = 3  # before each point, at the same concurrency, not measured
    # Before a server's first point, at the highest concurrency, not measured: TorchServe's JVM
    # compiles its request path meanwhile (its C2 compiler still spent about 220 us of CPU per
    # request 13 s into a load, about 15 us after 40 s).
    server_warmup_seconds: int = 20
    configurations: tuple[str, ...] = tuple(CONFIGURATIONS)
    wrk_threads: int = 1  # the client shares the cores with the server: as few threads as keep up
    forward_batches: tuple[int, ...] = (1, 32)
    # Bodies of this many records each (a client scoring many flights per call), at these connections:
    # a few clients, and enough of them that the server's cores are busy (its capacity in records/s)
    records_per_request: tuple[int, ...] = (10, 100, 1000)
    multi_record_concurrency: tuple[int, ...] = (4, 16)
    # The server with no traffic, after its load: CPU it spends on its own (timers, metrics, GC)
    idle_seconds: int = 10


@dataclass(frozen=True)
class ServedModel:
    """The one trained model every configuration serves: as the project's archive, as weights, as export."""

    name: str
    archive: Path  # <name>.mar built by `make archive`
    model_dir: Path  # weights + config.json, packed again for the defaults archive
    export_dir: Path  # model.pt + schema.json for FastAPI and the forward loop


def run_benchmark(model: ServedModel, records: list[dict[str, Any]], plan: BenchPlan, workdir: Path) -> dict[str, Any]:
    bodies = [json.dumps(record) for record in records]
    script = write_script(bodies, workdir / "records.lua")
    multi = {
        size: write_script(list_bodies(records, size), workdir / f"records-{size}.lua")
        for size in plan.records_per_request
    }
    plugins = build_plugin(workdir / "plugins").parent if "tuned" in plan.configurations else None
    starters: dict[str, Callable[[], contextlib.AbstractContextManager[Endpoint]]] = {
        "tuned": lambda: tuned_torchserve(model.archive, workdir / "tuned", model.name, plugins),
        "defaults": lambda: defaults_torchserve(model.model_dir, workdir / "defaults", model.name),
        "fastapi": lambda: fastapi_server(model.export_dir, workdir / "fastapi", model.name),
    }
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    if "forward" in plan.configurations:
        results["forward"] = measure_forward(model.export_dir, records, plan, workdir)
    for name in SERVERS:
        if name in plan.configurations:
            log.info("%s: starting", CONFIGURATIONS[name])
            results[name] = measure_server(name, starters[name], script, bodies, plan, multi)
    return {
        "plan": asdict(plan),
        "machine": machine(load_before),
        "records": len(records),
        "labels": {name: CONFIGURATIONS[name] for name in results},
        "configurations": results,
        "ratios": ratios(results, plan.concurrency),
    }


def list_bodies(records: list[dict[str, Any]], size: int, count: int = 8) -> list[str]:
    """`count` JSON lists of `size` records each, rotating through the records."""
    return [json.dumps([records[(start * size + i) % len(records)] for i in range(size)]) for start in range(count)]


def request_bodies(records: list[dict[str, Any]], size: int) -> list[str]:
    """Request bodies: one JSON object per record for size 1, else JSON lists of `size` records."""
    return [json.dumps(record) for record in records] if size == 1 else list_bodies(records, size)


def measure_load(
    endpoint: Endpoint, script: Path, connections: int, plan: BenchPlan
) -> tuple[Any, dict[str, float], ProcessTreeMemory]:
    """One measured wrk run, after its warm-up: the load, the server's CPU per request, its memory."""
    if plan.warmup_seconds:
        warm = run_wrk(endpoint.url, script, connections, plan.warmup_seconds, plan.wrk_threads)
        settle(connections, warm.requests_per_s)
    server_before, client_before = cpu_seconds(endpoint.pid), client_cpu_seconds()
    with ProcessTreeMemory(endpoint.pid) as memory:
        load = run_wrk(endpoint.url, script, connections, plan.seconds, plan.wrk_threads)
    cpu = cpu_per_request(server_before, cpu_seconds(endpoint.pid), client_cpu_seconds() - client_before, load.requests)
    settle(connections, load.requests_per_s)
    return load, cpu, memory


def measure_server(
    name: str,
    start: Callable[[], contextlib.AbstractContextManager[Endpoint]],
    script: Path,
    bodies: list[str],
    plan: BenchPlan,
    multi: dict[int, Path] | None = None,
) -> dict[str, Any]:
    points, multi_points, pids = [], [], set()
    with start() as endpoint:
        check_answers(endpoint.url, bodies[:3])
        if plan.server_warmup_seconds:
            busiest = max(plan.concurrency)
            warm = run_wrk(endpoint.url, script, busiest, plan.server_warmup_seconds, plan.wrk_threads)
            settle(busiest, warm.requests_per_s)
        for connections in plan.concurrency:
            load, cpu, memory = measure_load(endpoint, script, connections, plan)
            pids |= memory.pids
            point = {
                "concurrency": connections,
                "requests_per_s": load.requests_per_s,
                "requests": load.requests,
                "latency_ms": load.latency_ms,
                "non_2xx": load.non_2xx,
                "socket_errors": load.socket_errors,
                "cpu_us_per_request": cpu,
                **memory.summary(),
            }
            points.append(point)
            log.info(
                "%s, %d connections: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, %d errors, RSS %.0f MB",
                CONFIGURATIONS[name],
                connections,
                point["requests_per_s"],
                load.latency_ms["p50"],
                load.latency_ms["p99"],
                load.non_2xx + load.socket_errors,
                point["rss_peak_mb"],
            )
        for size, multi_script in (multi or {}).items():
            for connections in plan.multi_record_concurrency:
                load, cpu, memory = measure_load(endpoint, multi_script, connections, plan)
                pids |= memory.pids
                point = {
                    "records_per_request": size,
                    "concurrency": connections,
                    "requests_per_s": load.requests_per_s,
                    "records_per_s": load.requests_per_s * size,
                    "requests": load.requests,
                    "latency_ms": load.latency_ms,
                    "non_2xx": load.non_2xx,
                    "socket_errors": load.socket_errors,
                    "cpu_us_per_request": cpu,
                    **memory.summary(),
                }
                multi_points.append(point)
                log.info(
                    "%s, %d records per request, %d connections: %.0f records/s, p50 %.2f ms, %d errors",
                    CONFIGURATIONS[name],
                    size,
                    connections,
                    point["records_per_s"],
                    load.latency_ms["p50"],
                    load.non_2xx + load.socket_errors,
                )
        idle = idle_cpu(endpoint.pid, plan.idle_seconds) if plan.idle_seconds else None
    measured = points + multi_points
    return {
        "settings": endpoint.settings,
        "ports": list(endpoint.ports),
        "pids": sorted(pids),
        "points": points,
        "multi_record_points": multi_points,
        "idle_cpu": idle,
        "rss_peak_mb": max(p["rss_peak_mb"] for p in measured),
        "pss_peak_mb": max(p["pss_peak_mb"] for p in measured),
    }


def idle_cpu(pid: int, seconds: float) -> dict[str, float]:
    """Percent of one core the server's processes spend with no traffic, by role, over `seconds`."""
    before = cpu_seconds(pid)
    started = time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(pid), time.monotonic() - started
    percent = {role: 100 * used / elapsed for role, used in cpu_by_role(before, after).items()}
    return {**percent, "total": sum(percent.values()), "seconds": elapsed}


def cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of `pid` and its descendants, by pid, with each one's role:
    TorchServe's "frontend" (the JVM), its "workers" (the Python backends), and "server" for
    anything else (TorchServe's launcher; the whole FastAPI server)."""
    found = {}
    for process in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            found[process.pid] = (process_role(process), times.user + times.system)
    return found


def process_role(process: psutil.Process) -> str:
    """A server process's role: "frontend" (TorchServe's JVM), "workers" (its Python backends) or "server"."""
    if process.name() == "java":
        return "frontend"
    return "workers" if "model_service_worker" in " ".join(process.cmdline()) else "server"


def cpu_by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two cpu_seconds() readings, by role. A process that started or ended
    in between counts from what was seen of it."""
    spent: dict[str, float] = {"frontend": 0.0, "workers": 0.0, "server": 0.0}
    for pid, (role, seconds) in after.items():
        spent[role] += seconds - before.get(pid, (role, 0.0))[1]
    return spent


def client_cpu_seconds() -> float:
    """CPU seconds of this process's finished children: wrk, once each run has been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_per_request(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], client: float, requests: int
) -> dict[str, float]:
    """Microseconds of CPU per answered request, by role, over one measured run: where a request's cost goes."""
    spent = {**cpu_by_role(before, after), "client": client}
    return {role: seconds / requests * 1e6 if requests else 0.0 for role, seconds in spent.items()}


def settle(connections: int, requests_per_s: float) -> None:
    """wrk stops with a request in flight on every connection, and TorchServe still answers those into the
    void: wait until they are done, so the next run starts with an empty queue (a full one answers 503)."""
    time.sleep(min(5.0, 0.5 + connections / max(requests_per_s, 1.0)))


def check_answers(url: str, bodies: list[str]) -> None:
    """A server that refuses the benchmark's records would measure only its error path: stop early."""
    for body in bodies:
        request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            answer = json.load(reply)
        if reply.status != 200 or "model_version" not in answer:
            raise RuntimeError(f"{url} answered {reply.status} {answer} to {body}")


def measure_forward(export_dir: Path, records: list[dict[str, Any]], plan: BenchPlan, workdir: Path) -> dict[str, Any]:
    """benchmarks.forward in its own process, so its memory is the model's and torch's alone."""
    log.info("%s: batches of %s", CONFIGURATIONS["forward"], ", ".join(map(str, plan.forward_batches)))
    (workdir / "records.json").write_text(json.dumps(records))
    command = [
        sys.executable,
        "-m",
        "benchmarks.forward",
        "--export-dir",
        str(export_dir),
        "--records",
        str(workdir / "records.json"),
        "--seconds",
        str(plan.seconds),
    ]
    command += [argument for batch in plan.forward_batches for argument in ("--batch", str(batch))]
    measured = json.loads(subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    for point in measured["points"]:
        log.info(
            "forward, batch %d: %.0f records/s, p50 %.3f ms per call",
            point["batch"],
            point["requests_per_s"],
            point["latency_ms"]["p50"],
        )
    return {"points": measured["points"], **measured["memory"]}


def ratios(results: dict[str, Any], concurrency: tuple[int, ...]) -> list[dict[str, Any]]:
    """Tuned TorchServe's throughput over each other configuration's, per concurrency level."""
    if "tuned" not in results:
        return []
    rows = []
    for index, connections in enumerate(concurrency):
        tuned = results["tuned"]["points"][index]["requests_per_s"]
        row: dict[str, Any] = {"concurrency": connections}
        for name in ("defaults", "fastapi"):
            if name in results:
                row[f"tuned/{name}"] = tuned / results[name]["points"][index]["requests_per_s"]
        for point in results.get("forward", {}).get("points", []):
            row[f"tuned/forward_batch{point['batch']}"] = tuned / point["requests_per_s"]
        rows.append(row)
    return rows


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the numbers were measured on, load included: a busy machine makes them provisional."""
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{package: metadata.version(package) for package in ("torch", "torchserve", "fastapi", "uvicorn")},
        "wrk": wrk_version[0].split(" Copyright")[0] if wrk_version else "",
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


CAPACITY_MARKERS = block_markers("capacity", "make bench")


def doc_bench_block(doc: Path, table: Path) -> None:
    """bench.md without its title, as the bench block of a page (make: docs/load-and-capacity.md)."""
    text = table.read_text()
    replace_block(doc, block_markers("bench", "make bench"), text.split("\n", 1)[1] if text.startswith("# ") else text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--duration", type=int, default=BenchPlan.seconds, help="measured seconds per point")
    parser.add_argument("--warmup", type=int, default=BenchPlan.warmup_seconds, help="warm-up seconds per point")
    parser.add_argument(
        "--server-warmup",
        type=int,
        default=BenchPlan.server_warmup_seconds,
        help="warm-up seconds per server before its first point, at the highest concurrency",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(BenchPlan.concurrency))
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(CONFIGURATIONS),
        default=list(CONFIGURATIONS),
        help="configurations to measure (default: all)",
    )
    parser.add_argument("--records", type=int, default=300, help="test-month records the requests rotate through")
    parser.add_argument("--wrk-threads", type=int, default=BenchPlan.wrk_threads)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "bench")
    parser.add_argument(
        "--doc", type=Path, help="also write bench.md into this page's bench block (make: docs/load-and-capacity.md)"
    )
    parser.add_argument(
        "--capacity-doc",
        type=Path,
        help="also write the tuned service's capacity summary into this page's capacity block (make: README.md)",
    )
    args = parser.parse_args()
    configure_logging()
    wrk_command()  # fail before minutes of set-up, not after
    settings = load_settings(args.config)
    archive = settings.paths.model_store / f"{settings.model.name}.mar"
    if "tuned" in args.only and not archive.exists():
        parser.error(f"{archive} is missing: run `make archive` first")
    model = ServedModel(settings.model.name, archive, settings.paths.model_dir, settings.paths.export_dir)
    records = real_records(load_table(settings), settings.features, args.records, settings.seed)
    plan = BenchPlan(
        tuple(args.concurrency), args.duration, args.warmup, args.server_warmup, tuple(args.only), args.wrk_threads
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        results = run_benchmark(model, records, plan, Path(workdir))
    for path in write_report(results, args.out_dir):
        print(path)
    if args.doc:
        doc_bench_block(args.doc, args.out_dir / "bench.md")
    if args.capacity_doc:
        replace_block(args.capacity_doc, CAPACITY_MARKERS, capacity_summary(results))


if __name__ == "__main__":
    main()
