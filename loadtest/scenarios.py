"""`make loadtest`: run the scenarios of loadtest/slo.yaml headless with Locust against a
TorchServe it starts from the archive (or a running one: --url), then write Locust's CSV
and HTML reports, a summary table and latency-over-time plots under reports/loadtest/,
and exit 1 when a scenario breaks its SLO.

    python -m loadtest.scenarios --config params.yaml [--scenarios baseline overload] [--short]
    python -m loadtest.scenarios --config params.yaml --image mymodel-serve   # the traffic scenarios
                                                                        # against the container
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import requests
import yaml

from harness.torchserve import Server, healthcheck, torchserve
from model import configure_logging
from model.analysis.layout import save_figure
from model.base.markdown import block_markers, markdown, replace_block
from model.config import DEFAULT_CONFIG, ROOT, Settings, load_settings

log = logging.getLogger(__name__)

SLO_FILE = ROOT / "loadtest" / "slo.yaml"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
# Scenario settings that inject a fault into the server under test: only a server this job
# starts can take them (never one given by --url or an image).
FAULT_SETTINGS = ("kill_after_s", "heap", "cpus", "workers")
# The generated blocks of docs/load-and-capacity.md this job rewrites (`--doc`).
DOC_MARKERS = block_markers("loadtest", "make loadtest")
IMAGE_DOC_MARKERS = block_markers("loadtest-image", "make loadtest-image")
# The gate's own test inside `make test`: seconds, not minutes, but 20 users at the scenario's
# rate so that one request lost with a killed worker stays under a 1 % error budget.
SHORT = {"duration_s": 8, "users": 20, "kill_after_s": 3}


@dataclass
class Outcome:
    scenario: str
    stats: dict[str, float]
    extra: dict[str, float] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)


def read_slos(path: Path = SLO_FILE, short: bool = False) -> dict[str, dict[str, Any]]:
    scenarios = yaml.safe_load(path.read_text())["scenarios"]
    if short:
        for spec in scenarios.values():
            spec["duration_s"] = min(spec["duration_s"], SHORT["duration_s"])
            spec["users"] = min(spec["users"], SHORT["users"])
            spec["spawn_rate"] = min(spec["spawn_rate"], SHORT["users"])
            if "kill_after_s" in spec:
                spec["kill_after_s"] = SHORT["kill_after_s"]
    return scenarios


def config_property(name: str) -> str:
    for line in (ROOT / "config.properties").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise KeyError(name)


def run_locust(
    name: str, spec: dict[str, Any], host: str, out_dir: Path, payloads: Path, max_records: int, model: str
) -> subprocess.Popen:
    """Start Locust headless for one scenario; CSV and HTML land in out_dir/<name>*."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        spec["user"],
        "-u",
        str(spec["users"]),
        "-r",
        str(spec["spawn_rate"]),
        "-t",
        f"{spec['duration_s']}s",
        "--host",
        host,
        "--csv",
        str(out_dir / name),
        "--csv-full-history",
        "--html",
        str(out_dir / f"{name}.html"),
        "--only-summary",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = {
        **os.environ,
        "LOADTEST_PAYLOADS": str(payloads),
        "LOADTEST_RATE": str(spec["rate"]),
        "LOADTEST_MODEL": model,
        "LOADTEST_MAX_RECORDS": str(max_records),
        "LOADTEST_MAX_BYTES": config_property("max_request_size"),
    }
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_locust(process: subprocess.Popen, spec: dict[str, Any]) -> None:
    try:
        _, errors = process.communicate(timeout=spec["duration_s"] + 90)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"locust exited with {process.returncode}: {errors[-2000:]}")


def self_contained_report(page: Path) -> None:
    """Locust's HTML report links its favicons as ../../assets/*.png, files beside its own web UI
    that a report on disk does not have (a browser logs each as not found): embed them."""
    # found, not imported: importing locust monkey-patches this process for gevent
    locust = importlib.util.find_spec("locust")
    if locust is None or locust.origin is None:
        raise RuntimeError("locust is not installed (make setup installs it)")
    assets = Path(locust.origin).parent / "webui" / "dist" / "assets"
    html = page.read_text()
    for icon in re.findall(r'href="\.\./\.\./assets/([\w.-]+\.png)"', html):
        data = base64.b64encode((assets / icon).read_bytes()).decode()
        html = html.replace(f'href="../../assets/{icon}"', f'href="data:image/png;base64,{data}"')
    page.write_text(html)


def locust_stats(out_dir: Path, name: str) -> dict[str, float]:
    """The aggregated row of Locust's stats CSV, and status codes of the failures."""
    with open(out_dir / f"{name}_stats.csv") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    requests_total = int(total["Request Count"])
    failures = int(total["Failure Count"])
    server_errors = connection_errors = worker_died = 0
    with open(out_dir / f"{name}_failures.csv") as handle:
        for row in csv.DictReader(handle):
            got = re.search(r"got (\d{3})", row["Error"])
            if got and got.group(1).startswith("5"):
                server_errors += int(row["Occurrences"])
                # TorchServe's answer to the requests a worker held when it died ("Worker died.")
                worker_died += int(row["Occurrences"]) if got.group(1) == "507" else 0
            elif not got:
                connection_errors += int(row["Occurrences"])
    return {
        "requests": requests_total,
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "mean_ms": float(total["Average Response Time"]),
        "error_pct": 100 * failures / max(requests_total, 1),
        "server_errors": server_errors,
        "connection_errors": connection_errors,
        "worker_died": worker_died,
    }


def judge(outcome: Outcome, slo: dict[str, float]) -> list[str]:
    stats = {**outcome.stats, **outcome.extra}
    limits = {
        "p95_ms": ("p95_ms", "p95 latency {value:.0f} ms > {limit:g} ms"),
        "mean_ms": ("mean_ms", "mean latency {value:.0f} ms > {limit:g} ms"),
        "max_error_pct": ("error_pct", "{value:.2f}% failed requests > {limit:g}%"),
        "max_unexpected_pct": ("error_pct", "{value:.2f}% unexpected answers > {limit:g}%"),
        "max_5xx": ("server_errors", "{value:.0f} answers 5xx > {limit:g}"),
        "max_recovery_s": ("recovery_s", "workers READY again after {value:.1f} s > {limit:g} s"),
    }
    broken = []
    for key, limit in slo.items():
        metric, message = limits[key]
        value = stats.get(metric, float("inf"))
        if value > limit:
            broken.append(message.format(value=value, limit=limit))
    if outcome.stats["requests"] == 0:
        broken.append("no request was made")
    return broken


def has_faults(spec: dict[str, Any]) -> bool:
    return any(key in spec for key in FAULT_SETTINGS)


def kill_one_worker(management_url: str, model: str) -> float:
    """SIGKILL one worker; seconds until as many workers as before are READY, none of them it."""
    before = healthcheck().workers(management_url, model)
    victim = before[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 120:
        current = healthcheck().workers(management_url, model)
        ready = [w for w in current if w["status"] == "READY" and w["pid"] != victim]
        if len(ready) >= len(before):
            return time.monotonic() - killed
        time.sleep(0.05)
    return float("inf")


@contextlib.contextmanager
def server_under_test(url: str | None, settings: Settings, workdir: Path, **options: Any) -> Iterator[Server | None]:
    if url:
        yield None
        return
    with torchserve(settings.paths.model_store, workdir, model=settings.model.name, **options) as server:
        yield server


def server_options(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """How the scenario's settings start the server: `heap`, a copy of config.properties with that
    JVM heap; `cpus`, the whole server pinned to those cores."""
    options: dict[str, Any] = {}
    if "heap" in spec:
        config = workdir / "heap.properties"
        text = (ROOT / "config.properties").read_text()
        text, found = re.subn(r"^(vmargs=.*)-Xmx\S+", rf"\g<1>-Xmx{spec['heap']}", text, count=1, flags=re.M)
        if not found:
            raise ValueError("config.properties sets no -Xmx in vmargs for the scenario's heap to replace")
        config.write_text(text)
        options["extra_env"] = {"TS_CONFIG_FILE": str(config)}
    if "cpus" in spec:
        options["command_prefix"] = ["taskset", "-c", str(spec["cpus"])]
    return options


def run_scenario(
    name: str,
    spec: dict[str, Any],
    url: str | None,
    settings: Settings,
    out_dir: Path,
    payloads: Path,
    max_records: int,
    workdir: Path,
) -> Outcome:
    model = settings.model.name
    with server_under_test(url, settings, workdir / name, **server_options(spec, workdir)) as server:
        host = server.inference_url if server else url
        assert host, "without a URL, server_under_test starts a server"
        extra: dict[str, float] = {}
        if "workers" in spec and server:
            reply = requests.put(
                f"{server.management_url}/models/{model}",
                timeout=120,
                params={"min_worker": spec["workers"], "max_worker": spec["workers"], "synchronous": "true"},
            )
            reply.raise_for_status()
        locust = run_locust(name, spec, host, out_dir, payloads, max_records, model)
        if "kill_after_s" in spec and server:
            time.sleep(spec["kill_after_s"])
            extra["recovery_s"] = kill_one_worker(server.management_url, model)
            extra["killed_at_s"] = spec["kill_after_s"]
        wait_locust(locust, spec)
        self_contained_report(out_dir / f"{name}.html")
        if server:
            extra["server_rss_mb"] = server_rss_mb(server)
    outcome = Outcome(name, locust_stats(out_dir, name), extra)
    outcome.broken = judge(outcome, spec["slo"])
    return outcome


def server_rss_mb(server: Server) -> float:
    import psutil

    root = psutil.Process(server.process.pid)
    processes = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20


def plot_over_time(out_dir: Path, outcomes: list[Outcome]) -> Path:
    figure, axes = plt.subplots(len(outcomes), 1, figsize=(11, 2.6 * len(outcomes)), squeeze=False)
    for axis, outcome in zip(axes.flat, outcomes):
        history = pd.read_csv(out_dir / f"{outcome.scenario}_stats_history.csv")
        history = history[history["Name"] == "Aggregated"]
        seconds = history["Timestamp"] - history["Timestamp"].min()
        for column, color in (("50%", "#4c72b0"), ("95%", "#dd8452")):
            axis.plot(seconds, pd.to_numeric(history[column], errors="coerce"), label=f"p{column[:-1]} ms", color=color)
        twin = axis.twinx()
        twin.plot(seconds, history["Requests/s"], color="#55a868", linestyle=":", label="requests/s")
        twin.plot(seconds, history["Failures/s"], color="#c44e52", linestyle=":", label="failures/s")
        if "killed_at_s" in outcome.extra:
            axis.axvline(outcome.extra["killed_at_s"], color="#c44e52", linestyle="--")
        axis.set_title(outcome.scenario, fontsize=10)
        axis.set_ylabel("latency ms")
        twin.set_ylabel("per second")
        axis.legend(loc="upper left", fontsize=7)
        twin.legend(loc="upper right", fontsize=7)
    axes.flat[-1].set_xlabel("seconds since start")
    return save_figure(figure, out_dir / "latency_over_time.png")


def summary_table(outcomes: list[Outcome]) -> pd.DataFrame:
    rows = []
    for outcome in outcomes:
        stats, extra = outcome.stats, outcome.extra
        rows.append(
            {
                "scenario": outcome.scenario,
                "requests": stats["requests"],
                "rps": round(stats["rps"], 1),
                "p50 ms": stats["p50_ms"],
                "p95 ms": stats["p95_ms"],
                "p99 ms": stats["p99_ms"],
                "mean ms": round(stats["mean_ms"], 1),
                "errors %": round(stats["error_pct"], 2),
                "5xx": stats["server_errors"],
                "recovery s": round(extra["recovery_s"], 2) if "recovery_s" in extra else "",
                "server RSS MB": round(extra["server_rss_mb"]) if "server_rss_mb" in extra else "",
                "SLO": "met" if not outcome.broken else "BROKEN: " + "; ".join(outcome.broken),
            }
        )
    return pd.DataFrame(rows)


def write_payloads(settings: Settings, folder: Path, records: int) -> Path:
    from loadtest.payloads import write_payloads as write  # torch stays out of the Locust process

    write(settings, folder, records)
    return folder


def run_load_tests(
    settings: Settings,
    slo_file: Path = SLO_FILE,
    names: list[str] | None = None,
    out_dir: Path = ROOT / "reports" / "loadtest",
    url: str | None = None,
    short: bool = False,
) -> list[Outcome]:
    """Every named scenario in turn (each against a fresh server unless `url` is given);
    writes the reports and returns the outcomes with their broken SLOs."""
    scenarios = read_slos(slo_file, short)
    names = [name for name in (names or list(scenarios)) if not (url and has_faults(scenarios[name]))]
    out_dir.mkdir(parents=True, exist_ok=True)
    records = yaml.safe_load(slo_file.read_text())["defaults"]["records"]
    payloads = write_payloads(settings, out_dir / "payloads", min(records, 200) if short else records)
    schema_file = settings.paths.export_dir / "schema.json"  # absent when a server is tested before any training
    max_records = (
        json.loads(schema_file.read_text())["x-model"]["max_records"]
        if schema_file.exists()
        else settings.serving.max_records
    )
    outcomes = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            spec = scenarios[name]
            log.info("scenario %s: %d users for %d s", name, spec["users"], spec["duration_s"])
            outcome = run_scenario(name, spec, url, settings, out_dir, payloads, max_records, Path(workdir))
            log.info("%s: %s", name, "SLO met" if not outcome.broken else "SLO BROKEN: " + "; ".join(outcome.broken))
            outcomes.append(outcome)
    table = summary_table(outcomes)
    (out_dir / "summary.md").write_text(markdown(table))
    (out_dir / "summary.json").write_text(
        json.dumps(
            [
                {"scenario": o.scenario, **o.stats, **o.extra, "slo": scenarios[o.scenario]["slo"], "broken": o.broken}
                for o in outcomes
            ],
            indent=2,
        )
        + "\n"
    )
    plot_over_time(out_dir, outcomes)
    print(table.to_string(index=False))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--slo", type=Path, default=SLO_FILE, help="scenarios and SLOs (default: loadtest/slo.yaml)")
    parser.add_argument("--scenarios", nargs="*", help="default: all in the SLO file")
    parser.add_argument("--url", help="test a running server instead of starting one (fault scenarios need ours)")
    parser.add_argument("--image", help="start this serving image (docker/podman run) and test it like --url")
    parser.add_argument("--short", action="store_true", help="seconds, not minutes: the gate's own test")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports" / "loadtest")
    parser.add_argument(
        "--doc",
        "--readme",
        dest="doc",
        type=Path,
        help="also write the summary table into this page's loadtest block (make: docs/load-and-capacity.md)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings(args.config)
    if args.image:
        from harness.container import image_size_mb, started

        with started(args.image) as served:
            outcomes = run_load_tests(settings, args.slo, args.scenarios, args.out_dir, served.url(), args.short)
        where = f"`make loadtest-image` (the {args.image} container, {image_size_mb(args.image):,.0f} MB)"
        markers = IMAGE_DOC_MARKERS
    else:
        outcomes = run_load_tests(settings, args.slo, args.scenarios, args.out_dir, args.url, args.short)
        where, markers = "`make loadtest`", DOC_MARKERS
    if args.doc:
        replace_block(
            args.doc,
            markers,
            f"{where} on {time.strftime('%Y-%m-%d')}, "
            f"{os.cpu_count()} cores, load generator and server on the same machine:\n\n"
            + markdown(summary_table(outcomes)),
        )
    return 1 if any(o.broken for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
