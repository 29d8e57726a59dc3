"""Where a request's CPU goes: the tuned TorchServe under wrk at a few connections, its JVM
frontend sampled by Java Flight Recorder (jcmd JFR.start, profile settings) and its Python
workers by py-spy, both over the same measured seconds; the top entries of each.

    python -m benchmarks.profile --config params.yaml [--connections 1] [--seconds 20] \\
        [--set minWorkers=1 ...] [--out-dir reports/profile]

--set profiles a variant of the tuned settings instead (benchmarks/variants.py: model-config keys,
env.TS_<KEY>=...).

Writes profile.json and profile.md: CPU per request by process and by thread (user and kernel
time, from /proc: it counts what the samplers cannot see, such as system calls, the JIT compiler
and the garbage collector), the frontend's hottest methods (self samples) and packages, the
workers' hottest functions (self and inclusive).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.bench import client_cpu_seconds, cpu_per_request, cpu_seconds, process_role, request_bodies, settle
from benchmarks.bench_report import write_json_and_markdown
from benchmarks.memory import process_tree
from benchmarks.variants import parse_variant, variant_server
from benchmarks.wrk import run_wrk, write_script
from handler.frontend.build_plugin import build_plugin
from loadtest.payloads import real_records
from model import configure_logging
from model.config import DEFAULT_CONFIG, ROOT, load_settings
from model.data.prepare import load_table

log = logging.getLogger(__name__)
TOP = 15


def roles(pid: int) -> dict[str, list[int]]:
    """The frontend JVM and the worker processes under a TorchServe's launcher."""
    found: dict[str, list[int]] = {"frontend": [], "workers": []}
    for process in process_tree(pid):
        role = process_role(process)
        if role in found:
            found[role].append(process.pid)
    return found


def tool(name: str) -> str:
    """A command beside the running interpreter (py-spy in the venv), else on PATH (the JDK's)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is required for the profile (py-spy: make setup; jcmd and jfr: a JDK 17)")
    return found


def profile(
    model_dir: Path,
    model: str,
    variant: dict[str, Any],
    bodies: list[str],
    connections: int,
    seconds: int,
    warmup: int,
    workdir: Path,
    plugins: Path,
) -> dict[str, Any]:
    script = write_script(bodies, workdir / "records.lua")
    with variant_server(model_dir, workdir / "server", model, variant, plugins) as endpoint:
        warm = run_wrk(endpoint.url, script, max(connections, 16), warmup)  # the JVM compiles its request path
        settle(max(connections, 16), warm.requests_per_s)
        processes = roles(endpoint.pid)
        # First a window without the samplers (they cost CPU too): CPU by process and by thread as served.
        threads_before = {role: thread_cpu(pids) for role, pids in processes.items()}
        server_before, client_before = cpu_seconds(endpoint.pid), client_cpu_seconds()
        load = run_wrk(endpoint.url, script, connections, seconds)
        cpu = cpu_per_request(
            server_before, cpu_seconds(endpoint.pid), client_cpu_seconds() - client_before, load.requests
        )
        threads = {
            role: thread_table(threads_before[role], thread_cpu(pids), load.requests)
            for role, pids in processes.items()
        }
        settle(connections, load.requests_per_s)
        # Then the same load again, sampled.
        recording = workdir / "frontend.jfr"
        (java,) = processes["frontend"]
        subprocess.run(
            [
                tool("jcmd"),
                str(java),
                "JFR.start",
                "name=profile",
                "settings=profile",
                f"duration={seconds}s",
                f"filename={recording}",
            ],
            check=True,
            capture_output=True,
        )
        samplers = [
            subprocess.Popen(
                [
                    tool("py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "500",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(workdir / f"worker-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for pid in processes["workers"]
        ]
        sampled = run_wrk(endpoint.url, script, connections, seconds)
        for sampler in samplers:
            _, errors = sampler.communicate(timeout=seconds + 60)
            if sampler.returncode != 0:
                raise RuntimeError(f"py-spy failed: {errors[-2000:]}")
        deadline = time.monotonic() + 60
        while not recording.exists() and time.monotonic() < deadline:  # JFR writes when its duration ends
            time.sleep(0.5)
        time.sleep(1)
    worker_stacks = collections.Counter[str]()
    for pid in processes["workers"]:
        for line in (workdir / f"worker-{pid}.txt").read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack:
                worker_stacks[stack] += int(count)
    return {
        "connections": connections,
        "seconds": seconds,
        "variant": variant,
        "settings": endpoint.settings,
        "requests_per_s": load.requests_per_s,
        "sampled_requests_per_s": sampled.requests_per_s,
        "latency_ms": load.latency_ms,
        "cpu_us_per_request": cpu,
        "threads": threads,
        "frontend": frontend_profile(recording),
        "workers": worker_profile(worker_stacks),
    }


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], tuple[str, float, float]]:
    """Every thread of these processes: (pid, thread id) -> (name, user seconds, system seconds)."""
    found = {}
    for pid in pids:
        try:
            for thread in psutil.Process(pid).threads():
                comm = Path(f"/proc/{pid}/task/{thread.id}/comm")
                name = comm.read_text().strip() if comm.exists() else "?"
                found[(pid, thread.id)] = (name, thread.user_time, thread.system_time)
        except (psutil.Error, OSError):  # a process or thread that ended meanwhile
            continue
    return found


def thread_group(name: str) -> str:
    """A thread's kind: its name with numbers as N (W-9000-mymodel_ and W-9001-mymodel_ are one kind;
    Linux keeps the first 15 characters of a name)."""
    return re.sub(r"\d+", "N", name)


def thread_table(
    before: dict[tuple[int, int], tuple[str, float, float]],
    after: dict[tuple[int, int], tuple[str, float, float]],
    requests: int,
) -> list[dict[str, Any]]:
    """CPU microseconds per request by kind of thread, user and system, busiest first."""
    spent: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for key, (name, user, system) in after.items():
        _, user_before, system_before = before.get(key, (name, 0.0, 0.0))
        spent[thread_group(name)][0] += user - user_before
        spent[thread_group(name)][1] += system - system_before
    rows: list[dict[str, Any]]
    rows = [
        {"thread": name, "user_us": user / requests * 1e6, "system_us": system / requests * 1e6}
        for name, (user, system) in spent.items()
        if requests and user + system > 0
    ]
    return sorted(rows, key=lambda row: -(row["user_us"] + row["system_us"]))[:TOP]


def frame_name(frame: dict[str, Any]) -> str:
    method = frame["method"]
    return f"{method['type']['name'].replace('/', '.')}.{method['name']}"


def frontend_profile(recording: Path) -> dict[str, Any]:
    """JFR's execution samples: the hottest methods by self samples, and samples by package."""
    printed = subprocess.run(
        [tool("jfr"), "print", "--json", "--events", "jdk.ExecutionSample", str(recording)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    events = json.loads(printed)["recording"]["events"]
    own, packages, threads = collections.Counter[str](), collections.Counter[str](), collections.Counter[str]()
    for event in events:
        frames = event["values"]["stackTrace"]["frames"]
        if not frames:
            continue
        top = frame_name(frames[0])
        own[top] += 1
        # JFR names a class by its binary name: java/util/regex/Pattern
        packages[frames[0]["method"]["type"]["name"].rpartition("/")[0].replace("/", ".") or "(default package)"] += 1
        threads[event["values"]["sampledThread"]["javaName"].rstrip("0123456789-")] += 1
    total = sum(own.values())
    return {
        "samples": total,
        "self": share(own, total),
        "packages": share(packages, total),
        "threads": share(threads, total),
    }


# The parts of a worker's request path, by the function a sample passes through (its name, without
# the line): TorchServe's worker protocol on both sides of the handler, and the handler's own steps.
WORKER_PARTS = {
    "TorchServe reads a request off the socket and decodes it": "_retrieve_inference_msg",
    "TorchServe encodes the replies": "create_predict_response",
    "the handler, all of it (below: its parts)": "PredictionHandler.handle",
    "JSON parsing and validation, forward and answers": "PredictionService.handle_batch",
    "the forward pass (model.pt) and its tensors": "TorchScriptForward.__call__",
    "the handler's metric lines": "PredictionHandler.record",
    "the request log": "log_requests",
}


def worker_parts(stacks: collections.Counter, total: int) -> list[dict[str, Any]]:
    """The share of the workers' samples that pass through each of WORKER_PARTS."""
    rows = []
    for part, function in WORKER_PARTS.items():
        count = sum(
            n for stack, n in stacks.items() if any(frame.partition(" (")[0] == function for frame in stack.split(";"))
        )
        rows.append({"name": part, "function": function, "samples": count, "share": count / total if total else 0.0})
    return rows


def worker_profile(stacks: collections.Counter) -> dict[str, Any]:
    """py-spy's samples of the workers: of running threads (py-spy leaves out most of those blocked in a
    system call, but a wait in a socket's recv partly shows)."""
    own, inclusive = collections.Counter[str](), collections.Counter[str]()
    for stack, count in stacks.items():
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = sum(own.values())
    return {
        "samples": total,
        "self": share(own, total),
        "inclusive": share(inclusive, total),
        "parts": worker_parts(stacks, total),
    }


def share(counter: collections.Counter, total: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "samples": count, "share": count / total if total else 0.0}
        for name, count in counter.most_common(TOP)
    ]


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# Where a request's CPU goes (tuned TorchServe)", ""]
    for result in results:
        cpu = result["cpu_us_per_request"]
        changes = {**result["variant"]["model_config"], **result["variant"]["env"]}
        lines += [
            f"## {result['connections']} connection(s), {result['records_per_request']} record(s) per request, "
            f"{result['seconds']} s",
            "",
            f"Settings: {result['settings']}" + (f", changed: {changes}" if changes else "") + ".",
            "",
            f"{result['requests_per_s']:,.0f} requests/s, p50 {result['latency_ms']['p50']:.2f} ms, "
            f"p99 {result['latency_ms']['p99']:.2f} ms. CPU per request: frontend {cpu['frontend']:.0f} µs, "
            f"workers {cpu['workers']:.0f} µs, launcher {cpu['server']:.0f} µs, wrk {cpu['client']:.0f} µs.",
            "",
            "CPU per request by kind of thread (/proc, user and kernel time), in the same window, "
            "before the samplers start:",
            "",
            "| process | thread | user µs | system µs |",
            "| --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {role} | `{row['thread']}` | {row['user_us']:.0f} | {row['system_us']:.0f} |"
            for role, rows in result["threads"].items()
            for row in rows
        ]
        lines += [
            "",
            "Linux keeps 15 characters of a thread's name: `W-N-mymodel_` is TorchServe's thread per worker "
            "and the one reading that worker's output (its log and metric lines) together; `CN CompilerThre` "
            "the JIT compilers.",
            "",
            f"Then the same load sampled ({result['sampled_requests_per_s']:,.0f} requests/s under the "
            f"samplers). Frontend, Java Flight Recorder ({result['frontend']['samples']} samples of running Java "
            "code), hottest methods by own samples:",
            "",
            "| method | share |",
            "| --- | ---: |",
        ]
        lines += [f"| `{row['name']}` | {row['share']:.1%} |" for row in result["frontend"]["self"]]
        lines += ["", "By package:", "", "| package | share |", "| --- | ---: |"]
        lines += [f"| `{row['name']}` | {row['share']:.1%} |" for row in result["frontend"]["packages"]]
        lines += ["", "By thread:", "", "| thread | share |", "| --- | ---: |"]
        lines += [f"| `{row['name']}` | {row['share']:.1%} |" for row in result["frontend"]["threads"]]
        lines += [
            "",
            f"Workers, py-spy ({result['workers']['samples']} samples of every thread, waiting ones "
            "mostly left out), by own samples and inclusive:",
            "",
            "| function (own) | share |",
            "| --- | ---: |",
        ]
        lines += [f"| `{row['name']}` | {row['share']:.1%} |" for row in result["workers"]["self"]]
        workers_us = cpu["workers"]
        lines += [
            "",
            "The workers' request path: the share of their samples through each part, and about that "
            f"share of their {workers_us:.0f} µs per request:",
            "",
            "| part | function | share | µs per request |",
            "| --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {row['name']} | `{row['function']}` | {row['share']:.1%} | {row['share'] * workers_us:.0f} |"
            for row in result["workers"]["parts"]
        ]
        lines += ["", "| function (inclusive) | share |", "| --- | ---: |"]
        lines += [f"| `{row['name']}` | {row['share']:.1%} |" for row in result["workers"]["inclusive"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=int, default=20, help="profiled seconds per connection count")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured seconds first, at 16 connections or more")
    parser.add_argument("--records", type=int, default=300, help="test-month records the requests rotate through")
    parser.add_argument(
        "--records-per-request",
        type=int,
        default=1,
        help="records per body (1: one JSON object; more: a JSON list of them)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        dest="changes",
        help="profile the tuned settings with these changed (benchmarks/variants.py)",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "profile")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    if not (settings.paths.model_dir / "config.json").exists():
        parser.error(f"{settings.paths.model_dir} holds no trained model: run `make archive` first")
    variant = parse_variant("profiled", args.changes)
    records = real_records(load_table(settings), settings.features, args.records, settings.seed)
    bodies = request_bodies(records, args.records_per_request)
    results = []
    with tempfile.TemporaryDirectory(prefix="profile-plugins-") as built:
        plugins = build_plugin(Path(built)).parent
        for connections in args.connections:
            with tempfile.TemporaryDirectory(prefix="profile-") as workdir:
                result = profile(
                    settings.paths.model_dir,
                    settings.model.name,
                    variant,
                    bodies,
                    connections,
                    args.seconds,
                    args.warmup,
                    Path(workdir),
                    plugins,
                )
                results.append({**result, "records_per_request": args.records_per_request})
    print(write_json_and_markdown(results, markdown(results), args.out_dir, "profile")[1])


if __name__ == "__main__":
    main()
