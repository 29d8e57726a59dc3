"""The capacity benchmark end to end on the slice model, with tiny durations: its numbers are
only checked for shape (a busy machine moves them), its clean-up for real."""

from __future__ import annotations

import json
import socket

import psutil
import pytest

from benchmarks.bench import BenchPlan, ServedModel, run_benchmark
from benchmarks.bench_report import capacity_summary, write_report
from loadtest.payloads import real_records

SERVERS = ("tuned", "fastapi")
PLAN = BenchPlan(
    concurrency=(1, 4),
    seconds=1,
    warmup_seconds=1,
    server_warmup_seconds=1,
    configurations=(*SERVERS, "forward"),
    records_per_request=(10, 100),
    multi_record_concurrency=(2,),
    idle_seconds=2,
)


@pytest.fixture(scope="module")
def bench(settings, archive, metrics, table, tmp_path_factory):
    model = ServedModel(settings.model.name, archive, settings.paths.model_dir, settings.paths.export_dir)
    records = real_records(table, settings.features, count=64, seed=settings.seed)
    return run_benchmark(model, records, PLAN, tmp_path_factory.mktemp("bench"))


def ordered(latency: dict[str, float]) -> bool:
    return 0 < latency["p50"] <= latency["p90"] <= latency["p99"]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, only not yet reaped
    except psutil.NoSuchProcess:
        return True


def test_every_server_answered_every_concurrency_without_errors(bench):
    for name in SERVERS:
        points = bench["configurations"][name]["points"]
        assert [point["concurrency"] for point in points] == list(PLAN.concurrency)
        for point in points:
            assert point["requests_per_s"] > 0, (name, point)
            assert point["non_2xx"] == point["socket_errors"] == 0, (name, point)
            assert ordered(point["latency_ms"]), (name, point)
            assert point["rss_peak_mb"] >= point["rss_mean_mb"] > 0, (name, point)


def test_torchserve_memory_covers_its_workers(bench):
    """The whole tree is measured: frontend and workers, not only the launcher."""
    tuned = bench["configurations"]["tuned"]
    assert len(tuned["pids"]) >= 2 + tuned["settings"]["workers"]
    assert tuned["rss_peak_mb"] > bench["configurations"]["fastapi"]["rss_peak_mb"]


def test_cpu_per_request_is_split_between_frontend_workers_and_client(bench):
    for point in bench["configurations"]["tuned"]["points"]:
        cpu = point["cpu_us_per_request"]
        assert cpu["frontend"] > 0 and cpu["workers"] > 0 and cpu["client"] > 0, point
    for point in bench["configurations"]["fastapi"]["points"]:
        cpu = point["cpu_us_per_request"]
        assert cpu["server"] > 0 and cpu["frontend"] == cpu["workers"] == 0, point


def test_multi_record_bodies_are_answered_in_records_per_second(bench):
    for name in SERVERS:
        points = bench["configurations"][name]["multi_record_points"]
        assert [(p["records_per_request"], p["concurrency"]) for p in points] == [(10, 2), (100, 2)], name
        for point in points:
            assert point["non_2xx"] == point["socket_errors"] == 0, (name, point)
            assert point["records_per_s"] == pytest.approx(point["requests_per_s"] * point["records_per_request"])
            assert ordered(point["latency_ms"]) and point["cpu_us_per_request"]["client"] > 0, (name, point)


def test_idle_cpu_is_measured_by_role(bench):
    for name in SERVERS:
        idle = bench["configurations"][name]["idle_cpu"]
        assert idle["seconds"] >= PLAN.idle_seconds and idle["total"] >= 0, name
        assert idle["total"] == pytest.approx(idle["frontend"] + idle["workers"] + idle["server"])
    assert bench["configurations"]["fastapi"]["idle_cpu"]["frontend"] == 0


def test_the_forward_limit_is_measured_per_batch_size(bench):
    forward = bench["configurations"]["forward"]
    assert [point["batch"] for point in forward["points"]] == list(PLAN.forward_batches)
    for point in forward["points"]:
        assert point["requests_per_s"] > 0 and ordered(point["latency_ms"])
    assert forward["rss_peak_mb"] > 0
    batch1, batch32 = forward["points"]
    assert batch32["requests_per_s"] > batch1["requests_per_s"]  # batching is what a forward pass rewards


def test_servers_are_stopped_afterwards(bench):
    for name in SERVERS:
        measured = bench["configurations"][name]
        for port in measured["ports"]:
            with socket.socket() as probe:
                probe.settimeout(1)
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listens on {port}"
        assert measured["pids"] and all(gone(pid) for pid in measured["pids"]), name


def test_report_has_ratios_table_json_and_plots(bench, tmp_path):
    written = write_report(bench, tmp_path)
    assert {path.name for path in written} == {
        "bench.json",
        "bench.md",
        "bench_throughput.png",
        "bench_p99.png",
        "bench_memory.png",
    }
    assert all(path.stat().st_size > 0 for path in written)
    assert json.loads((tmp_path / "bench.json").read_text())["configurations"].keys() == {*SERVERS, "forward"}
    assert [row["concurrency"] for row in bench["ratios"]] == list(PLAN.concurrency)
    assert all(row["tuned/fastapi"] > 0 and row["tuned/forward_batch32"] > 0 for row in bench["ratios"])
    table = (tmp_path / "bench.md").read_text()
    assert "| TorchServe, tuned | 4 |" in table and "| FastAPI + uvicorn | 1 |" in table
    assert "| TorchServe, tuned | 100 | 2 |" in table and "requests per server CPU-second" in table
    assert "CPU with no traffic" in table
    for target in ("tuned p50 at 1 connection <= 2x FastAPI's", "100-record requests >= 50%"):
        assert target in table


def test_the_capacity_summary_gives_latency_and_cpu_per_load_level(bench):
    summary = capacity_summary(bench)
    assert "requests per server CPU-second" in summary and summary.count("\n| 1 | ") == 1
    assert "| 2, 100 records per request |" in summary and " records) |" in summary  # records per CPU-second too
    assert "With no traffic the service uses" in summary
