"""Write the capacity benchmark's results: bench.json, a Markdown summary and plots.

The project's capacity targets are read against the measurements here, and reported,
never asserted: one busy run on a shared machine should not fail a build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

DEFAULTS_NOTE = (
    "TorchServe, defaults: the same handler and model.pt with TorchServe 0.12's own settings - "
    "batch size 1, one worker per core, job_queue_size 100, its own log4j2.xml (debug frontend log, "
    "access log), metrics written to log files, the JVM's own heap sizing - and only the API settings "
    "kept (no token, the handler parses the bytes); benchmarks/torchserve_defaults.py lists them."
)
SERVER_COLORS = {"tuned": "tab:blue", "defaults": "tab:orange", "fastapi": "tab:green"}
# What the project aims for (docs/load-and-capacity.md, capacity), each a ratio within one run or a bound.
MIN_TUNED_OVER_FASTAPI = 3.0  # throughput at the highest concurrency
MAX_TUNED_P99_MS = 20.0  # at the highest concurrency
MIN_TUNED_OVER_DEFAULTS = 8.0  # throughput at the highest concurrency
MAX_SERVICE_MB = 600.0
MAX_P50_OVER_FASTAPI_AT_1 = 2.0  # p50 at one connection, tuned over FastAPI's
MULTI_RECORD_SIZE = 100  # records per request of the multi-record target
MIN_MULTI_RECORD_SHARE = 0.5  # of the one-core forward's records/s at batch 32
MEMORY_NOTE = (
    "The service's memory is the sum of its processes' PSS: every page counted once, a page the "
    "processes share split among them, as a container's memory accounting charges a shared page once. "
    "The sum of RSS counts the torch library pages every worker maps once per worker: an upper bound."
)


def write_json_and_markdown(data: Any, text: str, out_dir: Path, stem: str) -> list[Path]:
    """<stem>.json (the measurements) and <stem>.md (their tables) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    written[1].write_text(text)
    return written


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    written = write_json_and_markdown(results, markdown(results), out_dir, "bench")
    servers = [name for name in SERVER_COLORS if name in results["configurations"]]
    if servers:
        written += [plot_throughput(results, servers, out_dir), plot_p99(results, servers, out_dir)]
    written.append(plot_memory(results, out_dir))
    return written


def markdown(results: dict[str, Any]) -> str:
    plan, host, labels = results["plan"], results["machine"], results["labels"]
    configurations = results["configurations"]
    lines = [
        "# Capacity benchmark",
        "",
        f"Single-record requests, rotating through {results['records']} real test-month flights; wrk keeps each "
        f"connection one request in flight for {plan['seconds']} s per point after {plan['warmup_seconds']} s of "
        f"warm-up, and each server first serves {plan.get('server_warmup_seconds', 0)} s at the highest concurrency "
        f"unmeasured, so its JVM has compiled the request path ({plan['wrk_threads']} wrk thread(s) on the same "
        f"machine). {host['cpus']} CPUs, "
        f"{host['platform']}, torch {host['torch']}, {host['wrk']}; load average "
        f"{host['load_average_before'][0]:.2f} before, {host['load_average_after'][0]:.2f} after: "
        "numbers from a machine doing other work are provisional.",
        "",
        "| configuration | connections | requests/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors "
        "| RSS peak MB | PSS peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in SERVER_COLORS:
        for point in configurations.get(name, {}).get("points", []):
            latency = point["latency_ms"]
            lines.append(
                f"| {labels[name]} | {point['concurrency']} | {point['requests_per_s']:,.0f} "
                f"| {latency['p50']:.2f} | {latency['p90']:.2f} | {latency['p99']:.2f} | {point['non_2xx']} "
                f"| {point['socket_errors']} | {point['rss_peak_mb']:.0f} | {point['pss_peak_mb']:.0f} |"
            )
    forward = configurations.get("forward")
    for point in (forward or {}).get("points", []):
        latency = point["latency_ms"]
        lines.append(
            f"| {labels['forward']}, batch {point['batch']} (records/s; ms per call) | - "
            f"| {point['requests_per_s']:,.0f} | {latency['p50']:.3f} | {latency['p90']:.3f} "
            f"| {latency['p99']:.3f} | - | - | {forward['rss_peak_mb']:.0f} | {forward['pss_peak_mb']:.0f} |"
        )
    if forward:
        lines += [
            "",
            "The forward rows are one torch thread on one core with inputs prepared beforehand: the ceiling "
            "a server approaches, not one it can reach.",
        ]
    lines += cpu_table(results)
    lines += multi_record_table(results)
    lines += idle_table(results)
    if results["ratios"]:
        columns = [key for key in results["ratios"][0] if key != "concurrency"]
        lines += [
            "",
            "Tuned TorchServe's throughput over each other configuration's:",
            "",
            "| connections | " + " | ".join(columns) + " |",
            "| ---: |" + " ---: |" * len(columns),
        ]
        lines += [
            f"| {row['concurrency']} | " + " | ".join(f"{row[key]:.2f}" for key in columns) + " |"
            for row in results["ratios"]
        ]
    lines += ["", *targets(results), "", "What each server reported running with (TorchServe: its management API):", ""]
    for name in (name for name in SERVER_COLORS if name in configurations):
        settings = configurations[name]["settings"]
        lines.append(f"- {labels[name]}: " + ", ".join(f"{key} {value}" for key, value in settings.items()))
    if "defaults" in configurations:
        lines += ["", DEFAULTS_NOTE]
    return "\n".join(lines) + "\n"


def cpu_table(results: dict[str, Any]) -> list[str]:
    """Where each request's CPU time went, by process role, at every point: what bounds throughput
    when the load generator and the server share the cores."""
    configurations = results["configurations"]
    rows = [
        (results["labels"][name], point)
        for name in SERVER_COLORS
        for point in configurations.get(name, {}).get("points", [])
        if "cpu_us_per_request" in point
    ]
    if not rows:
        return []
    lines = [
        "",
        "CPU time per answered request, in microseconds (user + system), by process: TorchServe's JVM "
        "frontend, its Python workers, any other server process (TorchServe's launcher; the whole FastAPI "
        "server), and wrk:",
        "",
        "| configuration | connections | frontend | workers | other server | server total "
        "| requests per server CPU-second | wrk |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, point in rows:
        cpu = point["cpu_us_per_request"]
        total = server_cpu_us(point)
        lines.append(
            f"| {label} | {point['concurrency']} | {cpu['frontend']:.0f} | {cpu['workers']:.0f} "
            f"| {cpu['server']:.0f} | {total:.0f} | {1e6 / total if total else 0:,.0f} "
            f"| {cpu['client']:.0f} |"
        )
    lines += [
        "",
        "Requests per server CPU-second is what a capacity planner multiplies by the cores a replica "
        "gets: the server's own CPU only, wrk's excluded.",
    ]
    return lines


def server_cpu_us(point: dict[str, Any]) -> float:
    """CPU microseconds per request of the server's own processes (the load generator's excluded)."""
    cpu = point["cpu_us_per_request"]
    return cpu["frontend"] + cpu["workers"] + cpu["server"]


def forward_records_per_s(results: dict[str, Any], batch: int = 32) -> float | None:
    points = results["configurations"].get("forward", {}).get("points", [])
    return next((point["requests_per_s"] for point in points if point["batch"] == batch), None)


def multi_record_table(results: dict[str, Any]) -> list[str]:
    """Bodies of many records: records/s, time per request, and the share of the bare forward's rate."""
    configurations, labels = results["configurations"], results["labels"]
    rows = [
        (name, point) for name in SERVER_COLORS for point in configurations.get(name, {}).get("multi_record_points", [])
    ]
    if not rows:
        return []
    forward = forward_records_per_s(results)
    lines = [
        "",
        "Requests of many records each (one JSON list per body, rotating through the same flights):",
        "",
        "| configuration | records per request | connections | requests/s | records/s | p50 ms | p99 ms "
        "| errors | server CPU µs per record | of the forward's records/s (batch 32) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, point in rows:
        latency = point["latency_ms"]
        share = f"{point['records_per_s'] / forward:.0%}" if forward else "-"
        per_record = server_cpu_us(point) / point["records_per_request"]
        lines.append(
            f"| {labels[name]} | {point['records_per_request']:,} | {point['concurrency']} "
            f"| {point['requests_per_s']:,.1f} | {point['records_per_s']:,.0f} | {latency['p50']:.2f} "
            f"| {latency['p99']:.2f} | {point['non_2xx'] + point['socket_errors']} | {per_record:.1f} "
            f"| {share} |"
        )
    return lines


def idle_table(results: dict[str, Any]) -> list[str]:
    configurations, labels = results["configurations"], results["labels"]
    rows = [
        (labels[name], configurations[name]["idle_cpu"])
        for name in SERVER_COLORS
        if (configurations.get(name) or {}).get("idle_cpu")
    ]
    if not rows:
        return []
    lines = [
        "",
        "CPU with no traffic, after the load, in percent of one core:",
        "",
        "| configuration | frontend | workers | other server | total | over |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {label} | {idle['frontend']:.2f} | {idle['workers']:.2f} | {idle['server']:.2f} "
        f"| {idle['total']:.2f} | {idle['seconds']:.0f} s |"
        for label, idle in rows
    ]
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    """The project's capacity targets, read at the highest concurrency measured."""
    configurations = results["configurations"]
    if "tuned" not in configurations:
        return []
    top = configurations["tuned"]["points"][-1]
    ratios = results["ratios"][-1]
    tuned = configurations["tuned"]
    rows = [
        (
            f"tuned p99 at {top['concurrency']} connections <= {MAX_TUNED_P99_MS:.0f} ms",
            f"{top['latency_ms']['p99']:.1f} ms",
            top["latency_ms"]["p99"] <= MAX_TUNED_P99_MS,
        ),
        (
            f"tuned service memory under load (PSS) <= {MAX_SERVICE_MB:.0f} MB",
            f"{tuned['pss_peak_mb']:.0f} MB (RSS sum {tuned['rss_peak_mb']:.0f} MB) {peak_load(tuned)}",
            tuned["pss_peak_mb"] <= MAX_SERVICE_MB,
        ),
    ]
    for name, floor in (("fastapi", MIN_TUNED_OVER_FASTAPI), ("defaults", MIN_TUNED_OVER_DEFAULTS)):
        if f"tuned/{name}" in ratios:
            rows.append(
                (
                    f"tuned >= {floor:.0f}x {name} at {top['concurrency']} connections",
                    f"{ratios[f'tuned/{name}']:.3f}x",
                    ratios[f"tuned/{name}"] >= floor,
                )
            )
    rows += low_load_targets(results)
    multi = [p for p in tuned.get("multi_record_points", []) if p["records_per_request"] == MULTI_RECORD_SIZE]
    forward = forward_records_per_s(results)
    if multi and forward:
        best = max(multi, key=lambda point: point["records_per_s"])  # the capacity: the busiest level measured
        rows.append(
            (
                f"tuned {MULTI_RECORD_SIZE}-record requests >= {MIN_MULTI_RECORD_SHARE:.0%} of the forward's "
                "records/s at batch 32",
                f"{best['records_per_s']:,.0f} of {forward:,.0f} ({best['records_per_s'] / forward:.0%}) "
                f"at {best['concurrency']} connections",
                best["records_per_s"] >= MIN_MULTI_RECORD_SHARE * forward,
            )
        )
    return [
        "| target | measured | met |",
        "| --- | ---: | --- |",
        *[f"| {target} | {measured} | {'yes' if met else 'no'} |" for target, measured, met in rows],
        "",
        MEMORY_NOTE,
    ]


def peak_load(measured: dict[str, Any]) -> str:
    """The load at which a configuration's memory peaked, in words."""
    peak = max(measured["points"] + measured.get("multi_record_points", []), key=lambda point: point["pss_peak_mb"])
    records = peak.get("records_per_request", 1)
    bodies = f", {records:,} records per request" if records > 1 else ""
    return f"at {peak['concurrency']} connections{bodies}"


def low_load_targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """At one connection, where most services run: tuned's p50 against the defaults' and FastAPI's,
    and its server CPU per request against the defaults'."""
    configurations = results["configurations"]
    at_one = {
        name: next((p for p in configurations[name]["points"] if p["concurrency"] == 1), None)
        for name in ("tuned", "defaults", "fastapi")
        if name in configurations
    }
    tuned = at_one.get("tuned")
    if tuned is None:
        return []
    rows = []
    p50 = tuned["latency_ms"]["p50"]
    if defaults := at_one.get("defaults"):
        other = defaults["latency_ms"]["p50"]
        rows.append(
            (
                "tuned p50 at 1 connection <= the defaults'",
                f"{p50:.2f} vs {other:.2f} ms ({p50 / other:.2f}x)",
                p50 <= other,
            )
        )
        mine, theirs = server_cpu_us(tuned), server_cpu_us(defaults)
        rows.append(
            (
                "tuned server CPU per request at 1 connection <= the defaults'",
                f"{mine:,.0f} vs {theirs:,.0f} µs ({mine / theirs:.2f}x)",
                mine <= theirs,
            )
        )
    if fastapi := at_one.get("fastapi"):
        other = fastapi["latency_ms"]["p50"]
        rows.append(
            (
                f"tuned p50 at 1 connection <= {MAX_P50_OVER_FASTAPI_AT_1:.0f}x FastAPI's",
                f"{p50:.2f} vs {other:.2f} ms ({p50 / other:.2f}x)",
                p50 <= MAX_P50_OVER_FASTAPI_AT_1 * other,
            )
        )
    return rows


def capacity_summary(results: dict[str, Any]) -> str:
    """What to expect of the tuned service by load level, and the figure to size replicas by: the
    README's capacity block."""
    tuned = results["configurations"].get("tuned")
    if not tuned:
        return ""
    host = results["machine"]
    lines = [
        f"Tuned TorchServe, single-record requests, wrk on the same {host['cpus']}-CPU machine "
        f"(torch {host['torch']}; load average {host['load_average_before'][0]:.2f} before):",
        "",
        "| clients (connections) | requests/s | p50 ms | p99 ms | server CPU per request | "
        "requests per server CPU-second |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for point in tuned["points"]:
        cpu = server_cpu_us(point)
        lines.append(
            f"| {point['concurrency']} | {point['requests_per_s']:,.0f} | {point['latency_ms']['p50']:.2f} "
            f"| {point['latency_ms']['p99']:.2f} | {cpu:,.0f} µs | {1e6 / cpu if cpu else 0:,.0f} |"
        )
    for point in tuned.get("multi_record_points", []):
        cpu = server_cpu_us(point)
        lines.append(
            f"| {point['concurrency']}, {point['records_per_request']:,} records per request "
            f"| {point['requests_per_s']:,.1f} ({point['records_per_s']:,.0f} records/s) "
            f"| {point['latency_ms']['p50']:.2f} | {point['latency_ms']['p99']:.2f} | {cpu:,.0f} µs "
            f"| {1e6 / cpu if cpu else 0:,.1f} ({point['records_per_request'] * 1e6 / cpu if cpu else 0:,.0f} "
            "records) |"
        )
    if tuned.get("idle_cpu"):
        lines += ["", f"With no traffic the service uses {tuned['idle_cpu']['total']:.2f} % of one core."]
    return "\n".join(lines) + "\n"


def plot_throughput(results: dict[str, Any], servers: list[str], out_dir: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in servers:
        points = results["configurations"][name]["points"]
        axes.plot(
            [p["concurrency"] for p in points],
            [p["requests_per_s"] for p in points],
            marker="o",
            color=SERVER_COLORS[name],
            label=results["labels"][name],
        )
    for point, style in zip(results["configurations"].get("forward", {}).get("points", []), (":", "--", "-.")):
        axes.axhline(
            point["requests_per_s"], color="grey", linestyle=style, label=f"forward, batch {point['batch']} (one core)"
        )
    axes.set(
        xscale="log",
        yscale="log",
        xlabel="connections",
        ylabel="requests/s (single record)",
        title="Throughput by concurrency",
    )
    axes.set_xticks(results["plan"]["concurrency"], [str(c) for c in results["plan"]["concurrency"]])
    axes.legend(fontsize=8)
    return save(figure, out_dir / "bench_throughput.png")


def plot_p99(results: dict[str, Any], servers: list[str], out_dir: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in servers:
        points = results["configurations"][name]["points"]
        axes.plot(
            [p["concurrency"] for p in points],
            [p["latency_ms"]["p99"] for p in points],
            marker="o",
            color=SERVER_COLORS[name],
            label=results["labels"][name],
        )
    axes.axhline(MAX_TUNED_P99_MS, color="red", linestyle="--", label=f"target {MAX_TUNED_P99_MS:.0f} ms")
    axes.set(xscale="log", yscale="log", xlabel="connections", ylabel="p99 latency, ms", title="p99 by concurrency")
    axes.set_xticks(results["plan"]["concurrency"], [str(c) for c in results["plan"]["concurrency"]])
    axes.legend(fontsize=8)
    return save(figure, out_dir / "bench_p99.png")


def plot_memory(results: dict[str, Any], out_dir: Path) -> Path:
    names = [name for name in (*SERVER_COLORS, "forward") if name in results["configurations"]]
    measured = [results["configurations"][name] for name in names]
    positions = range(len(names))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.bar([x - 0.2 for x in positions], [m["rss_peak_mb"] for m in measured], width=0.4, label="RSS (sum)")
    axes.bar([x + 0.2 for x in positions], [m["pss_peak_mb"] for m in measured], width=0.4, label="PSS (sum)")
    axes.axhline(MAX_SERVICE_MB, color="red", linestyle="--", label=f"target {MAX_SERVICE_MB:.0f} MB (PSS)")
    axes.set_xticks(list(positions), [results["labels"][name] for name in names], fontsize=8)
    axes.set(ylabel="MB, peak under load, whole process tree", title="Memory per configuration")
    axes.legend(fontsize=8)
    return save(figure, out_dir / "bench_memory.png")


def save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
