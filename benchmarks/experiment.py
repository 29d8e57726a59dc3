"""Serving experiments: the tuned TorchServe against variants of its settings, in one run,
alternating, so that each is kept only when it is better beyond the noise.

    python -m benchmarks.experiment --config params.yaml \\
        --variant delay0 maxBatchDelay=0 --variant one-worker minWorkers=1 maxWorkers=1 \\
        [--concurrency 1 16 64] [--rounds 2] [--out-dir reports/experiments]

A variant (benchmarks/variants.py) changes the archive's model-config.yaml (minWorkers, maxWorkers,
batchSize, maxBatchDelay, handler.<option>) or, as env.<NAME>=..., the server's environment (any
config.properties key as TS_<KEY>, e.g. env.TS_VMARGS=...). Every round starts each
configuration afresh, warms it up and measures it at every concurrency level, in the same order;
the spread of a configuration's rounds is the noise its differences are read against.
Writes experiment.json and experiment.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench import BenchPlan, measure_load, request_bodies, settle
from benchmarks.bench_report import server_cpu_us, write_json_and_markdown
from benchmarks.variants import BASELINE, parse_variant, variant_server
from benchmarks.wrk import run_wrk, write_script
from handler.frontend.build_plugin import build_plugin
from loadtest.payloads import real_records
from model import configure_logging
from model.config import DEFAULT_CONFIG, ROOT, load_settings
from model.data.prepare import load_table

log = logging.getLogger(__name__)


def measure(
    model_dir: Path,
    model: str,
    variant: dict[str, Any],
    script: Path,
    concurrency: list[int],
    seconds: int,
    warmup: int,
    workdir: Path,
    plugins: Path,
) -> list[dict[str, Any]]:
    plan = BenchPlan(seconds=seconds, warmup_seconds=3)
    points = []
    with variant_server(model_dir, workdir, model, variant, plugins) as endpoint:
        warm = run_wrk(endpoint.url, script, max(concurrency), warmup)
        settle(max(concurrency), warm.requests_per_s)
        for connections in concurrency:
            load, cpu, _ = measure_load(endpoint, script, connections, plan)
            point = {
                "concurrency": connections,
                "requests_per_s": load.requests_per_s,
                "p50_ms": load.latency_ms["p50"],
                "p99_ms": load.latency_ms["p99"],
                "errors": load.non_2xx + load.socket_errors,
                "cpu_us_per_request": cpu,
                "settings": endpoint.settings,
            }
            points.append({**point, "server_cpu_us": server_cpu_us(point)})
            log.info(
                "%s, %d connections: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, server CPU %.0f us/request",
                variant["name"],
                connections,
                load.requests_per_s,
                load.latency_ms["p50"],
                load.latency_ms["p99"],
                points[-1]["server_cpu_us"],
            )
    return points


def summarize(rounds: dict[str, list[list[dict[str, Any]]]], concurrency: list[int]) -> list[dict[str, Any]]:
    """Per configuration and concurrency: the median of the rounds, their relative spread (the noise),
    and the ratio to the baseline's median."""
    rows = []
    for name, measured in rounds.items():
        for index, connections in enumerate(concurrency):
            row: dict[str, Any] = {"configuration": name, "concurrency": connections}
            for metric in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us"):
                values = [points[index][metric] for points in measured]
                median = statistics.median(values)
                row[metric] = median
                row[f"{metric}_spread"] = (max(values) - min(values)) / median if median else 0.0
                base = statistics.median(points[index][metric] for points in rounds[BASELINE])
                row[f"{metric}_vs_baseline"] = median / base if base else 0.0
            row["errors"] = sum(points[index]["errors"] for points in measured)
            rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Serving experiments",
        "",
        f"Bodies of {result['records_per_request']} record(s); {result['rounds']} alternating rounds; "
        f"each configuration started afresh per round, warmed up {result['warmup_seconds']} s, "
        f"then {result['seconds']} s per point. Median of the rounds; "
        "spread = (max - min) / median across a configuration's own rounds (the noise); "
        "x = the median over the tuned baseline's.",
        "",
        "| configuration | connections | requests/s | spread | x | p50 ms | spread | x | p99 ms | x "
        "| server CPU µs/request | spread | x | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['configuration']} | {row['concurrency']} | {row['requests_per_s']:,.0f} "
            f"| {row['requests_per_s_spread']:.0%} | {row['requests_per_s_vs_baseline']:.2f} "
            f"| {row['p50_ms']:.2f} | {row['p50_ms_spread']:.0%} | {row['p50_ms_vs_baseline']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['p99_ms_vs_baseline']:.2f} | {row['server_cpu_us']:,.0f} "
            f"| {row['server_cpu_us_spread']:.0%} | {row['server_cpu_us_vs_baseline']:.2f} | {row['errors']} |"
        )
    lines += ["", "Variants:", ""]
    lines += [
        f"- {v['name']}: model-config {v['model_config'] or '-'}, environment {v['env'] or '-'}"
        for v in result["variants"]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a variant: its name, then its settings",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per point")
    parser.add_argument("--warmup", type=int, default=15, help="unmeasured seconds per server, at the top concurrency")
    parser.add_argument("--records", type=int, default=300, help="test-month records the requests rotate through")
    parser.add_argument(
        "--records-per-request",
        type=int,
        default=1,
        help="records per body (1: one JSON object; more: a JSON list of them)",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "experiments")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    variants: list[dict[str, Any]] = [{"name": BASELINE, "model_config": {}, "env": {}}]
    variants += [parse_variant(name, assignments) for name, *assignments in args.variant]
    records = real_records(load_table(settings), settings.features, args.records, settings.seed)
    rounds: dict[str, list[list[dict[str, Any]]]] = {variant["name"]: [] for variant in variants}
    with tempfile.TemporaryDirectory(prefix="experiment-") as workdir:
        script = write_script(request_bodies(records, args.records_per_request), Path(workdir) / "records.lua")
        plugins = build_plugin(Path(workdir) / "plugins").parent
        for round_index in range(args.rounds):
            for variant in variants:
                folder = Path(workdir) / f"{variant['name']}-{round_index}"
                rounds[variant["name"]].append(
                    measure(
                        settings.paths.model_dir,
                        settings.model.name,
                        variant,
                        script,
                        args.concurrency,
                        args.seconds,
                        args.warmup,
                        folder,
                        plugins,
                    )
                )
    result = {
        "rounds": args.rounds,
        "records_per_request": args.records_per_request,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "concurrency": args.concurrency,
        "variants": variants,
        "measured": rounds,
        "summary": summarize(rounds, args.concurrency),
    }
    print(write_json_and_markdown(result, markdown(result), args.out_dir, "experiment")[1])


if __name__ == "__main__":
    main()
