"""The handler's two runtimes served by real TorchServe: the tuned server (config.properties, the
entrypoint, the archive's model-config.yaml) with `runtime: torchscript` (model.pt in torch) and
with `runtime: onnx` (the archive's model.onnx in ONNX Runtime), everything else equal.

    python -m benchmarks.served_runtimes --config params.yaml --doc docs/model.md     # make served-runtime-bench

Alternating rounds (benchmarks/experiment.py's measure: each configuration started afresh, warmed
up, then measured with wrk): bodies of 1, 100 and 1,000 test-month records, at one connection
(the p50) and at 16 (the capacity: the server's cores are busy). The spread of a configuration's
rounds is the noise. The answers are compared on every test-month record, served by both.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from sklearn.metrics import roc_auc_score

from benchmarks.bench import request_bodies
from benchmarks.experiment import measure
from benchmarks.measured import machine, publish
from benchmarks.variants import variant_server
from benchmarks.wrk import write_script
from handler.frontend.build_plugin import build_plugin
from loadtest.payloads import real_records
from model import configure_logging
from model.base.markdown import block_markers, replace_block
from model.config import DEFAULT_CONFIG, load_settings
from model.data.prepare import load_table
from model.data.request_records import request_records
from model.data.sources import TARGET
from model.data.split import split_rows

log = logging.getLogger(__name__)

RUNTIMES = ("torchscript", "onnx")
BODIES = (1, 100, 1000)
CONCURRENCY = [1, 16]
MARKERS = block_markers("served-runtimes", "make served-runtime-bench")


def variant(runtime: str) -> dict[str, Any]:
    return {"name": runtime, "model_config": {"handler": {"runtime": runtime}}, "env": {}}


def served_answers(model_dir: Path, model: str, records: list[dict[str, Any]], workdir: Path) -> dict[str, list]:
    """Every record's probability from each runtime's TorchServe, in bodies of 1,000 records."""
    answers: dict[str, list[float]] = {}
    probability = f"{json.loads((model_dir / 'config.json').read_text())['target']}_probability"
    for runtime in RUNTIMES:
        with variant_server(model_dir, workdir / f"answers-{runtime}", model, variant(runtime), None) as endpoint:
            found: list[float] = []
            for start in range(0, len(records), 1000):
                body = json.dumps(records[start : start + 1000]).encode()
                request = urllib.request.Request(endpoint.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as reply:
                    found += [answer[probability] for answer in json.load(reply)]
            answers[runtime] = found
    return answers


def run(config: Path, rounds: int, seconds: int, warmup: int, doc: Path | None, out: Path | None) -> dict:
    settings = load_settings(config)
    table = load_table(settings)
    test = split_rows(table, "test")
    model, model_dir = settings.model.name, settings.paths.model_dir
    records = real_records(table, settings.features, 300, settings.seed)
    load_start = os.getloadavg()[0]
    measured: dict[str, dict[str, list]] = {runtime: {str(size): [] for size in BODIES} for runtime in RUNTIMES}
    with tempfile.TemporaryDirectory(prefix="served-runtimes-") as folder:
        work = Path(folder)
        answers = served_answers(model_dir, model, request_records(test, settings.features), work)
        plugins = build_plugin(work / "plugins").parent
        scripts = {size: write_script(request_bodies(records, size), work / f"records-{size}.lua") for size in BODIES}
        rng = random.Random(0)
        for round_index in range(rounds):
            order = list(RUNTIMES)
            rng.shuffle(order)
            for runtime in order:
                for size in BODIES:
                    points = measure(
                        model_dir,
                        model,
                        variant(runtime),
                        scripts[size],
                        CONCURRENCY,
                        seconds,
                        warmup,
                        work / f"{runtime}-{size}-{round_index}",
                        plugins,
                    )
                    measured[runtime][str(size)].append(points)
            log.info("round %d/%d done", round_index + 1, rounds)
    labels = test[TARGET].astype(int).tolist()
    accuracy = {runtime: roc_auc_score(labels, answers[runtime]) for runtime in RUNTIMES}
    facts = {
        "rounds": rounds,
        "seconds": seconds,
        "warmup": warmup,
        **machine(load_start),
        "records": len(labels),
        "model_version": json.loads((model_dir / "config.json").read_text())["version"],
        "roc_auc": accuracy,
        "max_abs_difference": max(abs(a - b) for a, b in zip(*answers.values())),
    }
    saved = {"facts": facts, "measured": measured}
    publish(saved, markdown(saved), out, doc, MARKERS)
    return saved


def spread(values: list[float]) -> str:
    """The median and the rounds' range around it, relative: the noise."""
    median = statistics.median(values)
    return f"{median:,.{2 if median < 100 else 0}f} ± {(max(values) - min(values)) / 2 / median:.0%}"


def verdict(saved: dict) -> tuple[bool, str]:
    """ONNX Runtime wins when it is ahead in every round at every body size, both in the p50 at one
    connection and in records/s at 16 (each round measures both back to back, so a round where torch is
    ahead means the difference is within the noise), with the same answers: probabilities within 1e-6
    and ROC AUC within 0.001."""
    facts, measured = saved["facts"], saved["measured"]
    lost = []
    for size in BODIES:
        pt, ox = measured["torchscript"][str(size)], measured["onnx"][str(size)]
        if not all(b[0]["p50_ms"] < a[0]["p50_ms"] for a, b in zip(pt, ox)):
            lost.append(f"the 1-connection p50 at {size:,} record(s)")
        if not all(b[1]["requests_per_s"] > a[1]["requests_per_s"] for a, b in zip(pt, ox)):
            lost.append(f"records/s at {size:,} record(s)")
    if facts["max_abs_difference"] > 1e-6 or abs(facts["roc_auc"]["onnx"] - facts["roc_auc"]["torchscript"]) > 0.001:
        lost.append("the answers")
    if lost:
        return False, "not ahead in every round in " + ", ".join(lost)
    return True, "ahead in every round at every body size, with the same answers"


def markdown(saved: dict) -> str:
    facts, measured = saved["facts"], saved["measured"]
    lines = [
        f"Model {facts['model_version']}, the tuned TorchServe (2 workers, adaptive batching) with "
        f"`runtime: torchscript` and with `runtime: onnx`, {facts['rounds']} alternating rounds, each "
        f"configuration started afresh per body size, warmed up {facts['warmup']} s, then {facts['seconds']} s "
        f"per point with wrk, on {facts['cpu']} ({facts['cores']} cores, load average {facts['load']:.1f} at the "
        f"start, {facts['load_end']:.1f} at the end). Median of the rounds ± half their range relative to it "
        "(the noise); × is ONNX Runtime over torch within each round: median (lowest–highest).",
        "",
        "| records per body | p50 ms at 1 connection, torchscript | onnx | × p50 | records/s at 16 "
        "connections, torchscript | onnx | × records/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in BODIES:
        pt, ox = measured["torchscript"][str(size)], measured["onnx"][str(size)]
        p50 = [[points[0]["p50_ms"] for points in rounds] for rounds in (pt, ox)]
        rate = [[points[1]["requests_per_s"] * size for points in rounds] for rounds in (pt, ox)]
        p50_ratio = [b / a for a, b in zip(*p50)]
        rate_ratio = [b / a for a, b in zip(*rate)]
        lines.append(
            f"| {size:,} | {spread(p50[0])} | {spread(p50[1])} | {statistics.median(p50_ratio):.2f} "
            f"({min(p50_ratio):.2f}–{max(p50_ratio):.2f}) | {spread(rate[0])} | {spread(rate[1])} "
            f"| {statistics.median(rate_ratio):.2f} ({min(rate_ratio):.2f}–{max(rate_ratio):.2f}) |"
        )
    errors = sum(
        point["errors"]
        for runtime in measured.values()
        for rounds in runtime.values()
        for points in rounds
        for point in points
    )
    auc = facts["roc_auc"]
    lines += [
        "",
        f"Answers, all {facts['records']:,} test-month records served by both: ROC AUC "
        f"{auc['torchscript']:.6f} (torchscript) and {auc['onnx']:.6f} (onnx), probabilities within "
        f"{facts['max_abs_difference']:.1e}; {errors} failed requests in the load.",
    ]
    wins, reason = verdict(saved)
    lines += ["", f"Verdict: `runtime: onnx` {'wins' if wins else 'does not win'} ({reason})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per point")
    parser.add_argument("--warmup", type=int, default=15, help="unmeasured seconds per server, at 16 connections")
    parser.add_argument("--doc", type=Path, default=None, help="write the table between the markers of this page")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/served_runtimes.json"))
    parser.add_argument(
        "--from-saved", type=Path, default=None, help="no measuring: write the table of a saved run (its --out file)"
    )
    args = parser.parse_args()
    configure_logging()
    if args.from_saved is not None:
        text = markdown(json.loads(args.from_saved.read_text()))
        if args.doc is not None:
            replace_block(args.doc, MARKERS, text)
        print(text)
        return
    run(args.config, args.rounds, args.seconds, args.warmup, args.doc, args.out)


if __name__ == "__main__":
    main()
