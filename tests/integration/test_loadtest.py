"""The load-test gate itself, in seconds: every scenario of loadtest/slo.yaml against real
TorchServes started from the slice's archive, and a broken SLO that must fail the gate."""

import json

import pytest
import yaml

from loadtest.scenarios import SLO_FILE, Outcome, judge, main, run_load_tests
from model.config import ROOT
from tests.browser import visit_file

BATCH_SIZE = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())["batchSize"]


@pytest.fixture(scope="module")
def short_run(settings, archive, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("loadtest")
    return run_load_tests(settings, out_dir=out_dir, short=True), out_dir


def test_every_scenario_runs_and_meets_its_slo(short_run):
    outcomes, _ = short_run
    assert [o.scenario for o in outcomes] == list(yaml.safe_load(SLO_FILE.read_text())["scenarios"])
    for outcome in outcomes:
        assert outcome.stats["requests"] > 0, outcome.scenario
        # A SIGKILLed worker loses the requests it holds, at most one batch: TorchServe answers them
        # 507 "Worker died." (whether any is in flight at the kill is chance). No other 5xx anywhere.
        lost = outcome.stats["worker_died"] if outcome.scenario == "worker_kill" else 0
        assert lost <= BATCH_SIZE and outcome.stats["server_errors"] == lost, (outcome.scenario, outcome.stats)
        assert outcome.broken == [], (outcome.scenario, outcome.broken)


def test_a_killed_worker_is_replaced_within_the_slo(short_run):
    killed = next(o for o in short_run[0] if o.scenario == "worker_kill")
    assert 0 < killed.extra["recovery_s"] <= 5


def test_reports_are_written(short_run):
    outcomes, out_dir = short_run
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [row["scenario"] for row in summary] == [o.scenario for o in outcomes]
    for name in (
        "summary.md",
        "latency_over_time.png",
        "baseline.html",
        "baseline_stats.csv",
        "baseline_stats_history.csv",
    ):
        assert (out_dir / name).stat().st_size > 0, name


def test_chromium_shows_each_scenarios_locust_report(short_run, browser):
    outcomes, out_dir = short_run
    for outcome in outcomes:
        seen = visit_file(browser, out_dir / f"{outcome.scenario}.html")
        assert seen.problems == [], outcome.scenario
        assert "Request Statistics" in seen.text and "Aggregated" in seen.text, outcome.scenario
        assert seen.screenshot.stat().st_size > 10_000


def test_the_gate_reports_every_broken_slo():
    outcome = Outcome(
        "baseline",
        {"requests": 100, "p95_ms": 250, "mean_ms": 90, "error_pct": 2.0, "server_errors": 1},
        {"recovery_s": 7.0},
    )
    broken = judge(outcome, {"p95_ms": 200, "mean_ms": 200, "max_error_pct": 1, "max_5xx": 0, "max_recovery_s": 5})
    assert len(broken) == 4
    assert any("p95 latency 250 ms > 200 ms" in b for b in broken)


def test_the_command_exits_non_zero_when_an_slo_is_broken(settings, archive, tmp_path):
    spec = yaml.safe_load(SLO_FILE.read_text())
    spec["scenarios"] = {"baseline": {**spec["scenarios"]["baseline"], "slo": {"p95_ms": 0.001}}}
    impossible = tmp_path / "slo.yaml"
    impossible.write_text(yaml.safe_dump(spec))
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    assert main(["--config", str(config), "--slo", str(impossible), "--short", "--out-dir", str(tmp_path / "out")]) == 1


def test_a_running_server_is_load_tested_with_no_model_at_hand(settings, server, tmp_path):
    """`make loadtest URL=...` before any training here: the payloads come from the data and the
    params file's feature contract, and the anomalous cases still get the answers they are owed."""
    untrained = settings.with_overrides(
        {"paths": {"export_dir": tmp_path / "no-export", "model_dir": tmp_path / "no-model"}}
    )
    (outcome,) = run_load_tests(
        untrained, names=["anomalous"], out_dir=tmp_path / "report", url=server.inference_url, short=True
    )
    assert outcome.stats["requests"] > 0 and outcome.broken == [], outcome.broken
    payloads = tmp_path / "report" / "payloads"
    assert json.loads((payloads / "adversarial.json").read_text()) == []  # FGSM needs the model
    kinds = {case["kind"] for case in json.loads((payloads / "anomalous.json").read_text())}
    assert kinds == {"noisy", "out_of_range", "unknown_category", "missing_optional", "missing_required"}
