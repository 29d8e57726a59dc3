"""Continuous training on the batch stream (model/lifecycle/continuous_training.py, run.py): the bootstrap, the retrain
decision, warm start against scratch, registration, promotion and rejection, inference on
anomalous files and the summary; run.py once per mode as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from model.artifact.predict import ISSUES, PREDICT
from model.config import ROOT, Settings
from model.data.sources import TIME
from model.lifecycle.batch_store import Store, batch_ids, ingest, model_metrics
from model.lifecycle.continuous_training import (
    SCRATCH,
    WARM,
    current_production,
    decide,
    promotion_check,
    training_window,
    update,
    work_settings,
)
from model.lifecycle.registry import ARCHIVED, CANDIDATE, HELD_OUT, PRODUCTION, replay_registry, version_export
from model.lifecycle.scoring import score_file
from model.lifecycle.summary_report import build_summary
from model.training.tracking import runs as tracking_runs
from model.training.train import fine_tune, train
from model.training.weights import CONFIG
from tests.browser import visit_file
from tests.make_commands import run_make_target

Replay = Callable[..., Settings]  # the fixtures of tests/model/conftest.py


def test_the_bootstrap_trains_registers_and_promotes_the_first_model(replay: Replay) -> None:
    settings = replay()
    registry, store = replay_registry(settings), Store(settings)
    (version,) = registry.versions()
    assert version.status == PRODUCTION
    assert store.batch_ids() == store.batch_ids(passed_only=True)
    assert len(store.batch_ids()) == settings.stream.bootstrap_batches
    stream = version.params["stream"]
    # Time-aware: the newest batch is held out, the one before validates, the rest train.
    assert stream["holdout_batch"] == store.batch_ids()[-1]
    assert stream["valid_batches"] == store.batch_ids()[-2:-1]
    assert stream["train_batches"] == store.batch_ids()[:-2]
    assert len(version.data_hash) == 32 and 0.5 < version.metrics["test"]["roc_auc"] < 1
    assert registry.archive_path(version.version).exists()
    (decision,) = store.decisions().to_dict("records")
    assert decision["promoted"] and decision["candidate_version"] == version.version
    # Nothing to beat yet: promoted by an override the registry keeps, never by the held-out check.
    assert [e.event for e in registry.events(version.version)] == ["registered", "promoted"]
    assert registry.events(version.version)[-1].detail["override"]["reason"].startswith("bootstrap")


def next_week(store: Store, settings: Settings, rows: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    """`rows` moved into the week after the newest stored one, as a one-batch source."""
    newest = pd.Timestamp(store.batch_ids()[-1])
    start = newest + pd.Timedelta(days=7)
    moved = rows.sample(n=min(len(rows), 4000), random_state=0).reset_index(drop=True)
    spread = pd.to_timedelta(np.arange(len(moved)) % (7 * 24 * 60), unit="min")
    moved[TIME] = (start + spread).astype(source[TIME].dtype)
    moved = moved[source.columns].sort_values(TIME, kind="stable").reset_index(drop=True)
    assert set(batch_ids(moved[TIME], settings)) == {start.strftime("%Y-%m-%d")}
    return moved


def test_drift_decides_a_retraining_and_an_unchanged_batch_does_not(replay: Replay, source: pd.DataFrame) -> None:
    # Metric decay and the batch count are switched off: only drift can decide here.
    settings = replay(retrain={"auc_drop": 1.0, "max_batches": 50})
    store, registry = Store(settings), replay_registry(settings)
    production = current_production(settings, store, registry)
    trained = store.rows(production.training_rows["batch"].unique().tolist())

    unchanged = next_week(store, settings, trained, source)
    ingest(store, unchanged, 1, production)
    kept = decide(settings, store, registry.production(), store.undecided())
    assert not kept.retrain, kept.reasons
    assert kept.reasons[0].startswith("no reason to retrain")
    store.add_decision(store.undecided()[0], store.undecided()[-1], 1, False, kept.reasons, None, False, {})

    shifted = trained.assign(
        temp=trained["temp"] + 40, dewp=trained["dewp"] + 40, distance=trained["distance"] * 1.5, carrier="ZZ"
    )
    drifted = next_week(store, settings, shifted, source)
    ingest(store, drifted, 1, production)
    decision = decide(settings, store, registry.production(), store.undecided())
    assert decision.retrain
    reason = decision.reasons[0]
    assert all(name in reason for name in ("temp", "dewp", "distance", "carrier")), reason


def test_the_warm_start_starts_from_the_production_weights(replay: Replay) -> None:
    settings = replay()
    store, registry = Store(settings), replay_registry(settings)
    production = registry.production()
    window = training_window(settings, store.batch_ids(passed_only=True))
    table = window.table(store)
    warm_settings, scratch_settings = work_settings(settings, WARM), work_settings(settings, SCRATCH)
    base = registry.weights_dir(production.version)
    warm = fine_tune(warm_settings, table, base, epochs=1, learning_rate=settings.stream.warm_start.learning_rate)
    scratch = train(scratch_settings.with_overrides({"train": {"max_epochs": 1}}), table)

    # Already fitted: its first epoch's loss is far below a fresh network's.
    assert warm["history"][0]["train_loss"] < scratch["history"][0]["train_loss"]
    assert warm["warm_start"]["from"] == str(production.version)
    tuned = json.loads((warm_settings.paths.model_dir / CONFIG).read_text())
    original = json.loads((base / CONFIG).read_text())
    assert tuned["vocabularies"] == original["vocabularies"]  # production's preprocessing is kept
    assert tuned["numeric_mean"] == original["numeric_mean"]


@pytest.fixture(scope="module")
def promoted(
    bootstrapped: Path, replay_settings: Replay, source: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """One update after the bootstrap that must retrain (max_batches 1) and must promote (tolerance and margin 1)."""
    folder = tmp_path_factory.mktemp("promoted") / "stream"
    shutil.copytree(bootstrapped, folder)
    settings = replay_settings(folder, retrain={"max_batches": 1}, promote_tolerance=1.0, baseline_margin=1.0)
    assert update(settings, source) is True
    return settings


def test_a_retraining_registers_the_better_candidate_and_promotes_it(promoted: Settings) -> None:
    registry, store = replay_registry(promoted), Store(promoted)
    first, second = registry.versions()
    assert (first.status, second.status) == (ARCHIVED, PRODUCTION)
    contenders = second.metrics["contenders"]
    assert set(contenders) == {WARM, SCRATCH}
    best = max(contenders, key=lambda name: contenders[name]["test"]["roc_auc"])
    assert second.params["stream"]["trained"] == second.metrics["trained"] == best
    assert second.metrics["production"]["version"] == first.version
    # Never evaluated on what it was trained on.
    stream = second.params["stream"]
    assert stream["holdout_batch"] == store.batch_ids(passed_only=True)[-1]
    assert stream["holdout_batch"] not in stream["train_batches"] + stream["valid_batches"]
    assert [e.event for e in registry.events(second.version)] == ["registered", HELD_OUT, "promoted"]
    check = registry.events(second.version)[1].detail
    assert check["passed"] and check["against"] == first.version and check["baseline"] == first.version
    assert check["candidate_roc_auc"] == contenders[best]["test"]["roc_auc"]
    # Both trainings are in the MLflow store beside the pipeline's runs, linked from the record.
    tracked = tracking_runs(promoted)
    for name, run in second.params["stream"]["mlflow_runs"].items():
        (row,) = tracked[tracked["run"] == run[:8]].to_dict("records")
        assert row["kind"] == f"stream {name}" and row["data hash"] == second.data_hash[:8]
    assert set(second.params["stream"]["mlflow_runs"]) == {WARM, SCRATCH}
    decision = store.decisions().iloc[-1]
    assert decision["retrain"] and decision["promoted"] and decision["candidate_version"] == second.version


def test_a_candidate_worse_than_the_tolerance_allows_is_rejected(replay: Replay, source: pd.DataFrame) -> None:
    settings = replay(retrain={"max_batches": 1}, promote_tolerance=-1.0)  # must beat production by 1: never
    assert update(settings, source) is False
    registry = replay_registry(settings)
    first, second = registry.versions()
    assert (first.status, second.status) == (PRODUCTION, ARCHIVED)
    assert [e.event for e in registry.events(second.version)] == ["registered", HELD_OUT, "rejected"]
    assert CANDIDATE not in {v.status for v in registry.versions()}
    assert any(reason.endswith(": worse") for reason in Store(settings).decisions().iloc[-1]["reasons"])


def test_losses_the_step_allows_cannot_add_up_below_the_floor(settings: Settings) -> None:
    """A chain of candidates each as much worse than production as stream.promote_tolerance allows:
    the step alone promotes every one, the floor stops the chain within stream.baseline_margin."""
    stream = settings.stream  # the configured rule (params.yaml)
    assert stream.promote_tolerance > 0 and stream.baseline_margin > 0
    baseline = production = 0.75
    step_only, promoted = production, []
    for _ in range(50):
        candidate = production - stream.promote_tolerance
        passed, reasons = promotion_check(stream, candidate, (len(promoted) + 1, production), (1, baseline))
        step_only -= stream.promote_tolerance
        if not passed:
            assert reasons[0].endswith(": ok") and reasons[1].endswith(": below the floor")
            break
        promoted.append(candidate)
        production = candidate
    assert promoted, "the step rule lets the first loss through"
    assert min(promoted) >= baseline - stream.baseline_margin
    assert len(promoted) <= stream.baseline_margin / stream.promote_tolerance + 1
    assert step_only < baseline - stream.baseline_margin  # what the step alone would have come to


def test_the_floor_rejects_what_the_step_lets_through(promoted: Settings, source: pd.DataFrame, tmp_path: Path) -> None:
    """After a promotion the baseline (the first production) and production differ: a candidate the
    step accepts (tolerance 1) but the floor does not (it must beat the baseline by 1) is rejected."""
    folder = tmp_path / "stream"
    shutil.copytree(promoted.stream.dir, folder)
    settings = promoted.with_overrides(
        {"stream": {"dir": str(folder), "promote_tolerance": 1.0, "baseline_margin": -1.0}}
    )
    assert update(settings, source) is False
    registry, store = replay_registry(settings), Store(settings)
    first, second, third = registry.versions()
    assert (first.status, second.status, third.status) == (ARCHIVED, PRODUCTION, ARCHIVED)
    check = registry.events(third.version)[1].detail
    assert registry.events(third.version)[1].event == HELD_OUT and not check["passed"]
    assert (check["against"], check["baseline"]) == (second.version, first.version)
    assert check["checks"][0].endswith(": ok") and check["checks"][1].endswith(": below the floor")
    # The baseline is the first production version scored on the same held-out batch, from its checked archive.
    holdout = store.clean_rows([third.params["stream"]["holdout_batch"]])
    assert (
        check["baseline_roc_auc"]
        == model_metrics(version_export(settings, registry, first.version), holdout)["roc_auc"]
    )
    decision = store.decisions().iloc[-1]
    assert decision["retrain"] and not decision["promoted"] and decision["reasons"][-2:] == check["checks"]


def test_an_update_without_a_reason_keeps_production(replay: Replay, source: pd.DataFrame) -> None:
    settings = replay(retrain={"drifted_features": 100, "prediction_drift": False, "auc_drop": 1.0, "max_batches": 50})
    assert update(settings, source) is False
    assert len(replay_registry(settings).versions()) == 1
    decision = Store(settings).decisions().iloc[-1]
    assert not decision["retrain"] and decision["reasons"][0].startswith("no reason to retrain")


ANOMALOUS = """carrier,origin,manufacturer,engine,month,day_of_week,hour,minute,distance,plane_year,temp,extra
UA,EWR,BOEING,Turbo-fan,3,2,8,30,1400,2005,41.0,x
,,,,,,,,,,,
ZZ,XYZ,,,13,9,abc,30,-5,1850,inf,
AA,JFK,AIRBUS,Turbo-jet,3,1,7,15,1089,2010,35.1,y,surplus,fields
B6,LGA
"""


def test_inference_scores_every_row_of_a_sparse_anomalous_file(promoted: Settings, tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    path.write_text(ANOMALOUS)
    written = score_file(promoted, path)
    assert written == tmp_path / "requests.predictions.csv"
    scored = pd.read_csv(written, keep_default_na=False)
    assert len(scored) == 5
    assert set(scored[PREDICT]) <= {0, 1}
    probability = scored[f"{promoted.data.target}_probability"].astype(float)
    assert probability.between(0, 1).all()
    assert (scored["model_version"] == replay_registry(promoted).production().version).all()
    issues = scored[ISSUES].tolist()
    assert issues[0] == "dest: missing"  # the file has no dest column: the only thing to say about row 1
    assert "dest: missing" in issues[1] and "month: missing" in issues[1]
    for text in (
        "unknown category 'ZZ'",
        "month: 13.0 outside [1, 12]",
        "hour: 'abc' is not a finite number",
        "distance: -5.0 outside",
        "temp: 'inf' is not a finite number",
    ):
        assert text in issues[2], issues[2]
    # The same file gives the same answers.
    again = pd.read_csv(score_file(promoted, path, tmp_path / "again.csv"), keep_default_na=False)
    assert again[PREDICT].tolist() == scored[PREDICT].tolist()


def test_the_summary_names_every_version_and_batch(promoted: Settings, browser) -> None:
    summary = build_summary(promoted)
    page = summary.read_text()
    registry, store = replay_registry(promoted), Store(promoted)
    for version in registry.versions():
        assert f"<td>{version.version}</td>" in page and version.model_id in page
    for batch in store.batch_ids():
        assert batch in page
    for title in ("Data quality over time", "Drift over time", "Model versions", "Decisions", "Time and memory"):
        assert title in page
    seen = visit_file(browser, summary)  # as Chromium shows it: a screenshot beside the page
    assert seen.problems == [] and seen.images and "Model versions" in seen.text
    assert seen.screenshot.stat().st_size > 10_000


def run_cli(settings: Settings, folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    config = folder / "params.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_run_py_prints_only_its_answer_in_every_mode(replay: Replay, tmp_path: Path) -> None:
    """Through the documented make targets (update, score, summary), which run run.py in each mode."""
    settings = replay()
    registry = replay_registry(settings)
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))

    updated = run_make_target("update", config, WEEKS="1")
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.splitlines() == [str(registry.production().version != 1)]

    path = tmp_path / "requests.csv"
    path.write_text(ANOMALOUS)
    inferred = run_make_target("score", config, FILE=str(path))
    assert inferred.returncode == 0, inferred.stderr
    (printed,) = inferred.stdout.splitlines()
    assert len(pd.read_csv(printed)) == 5

    summarized = run_make_target("summary", config)
    assert summarized.returncode == 0, summarized.stderr
    (page,) = summarized.stdout.splitlines()
    assert Path(page).suffix == ".html" and Path(page).exists()

    runs = [json.loads(line) for line in (settings.stream.dir / "runs.jsonl").read_text().splitlines()]
    assert [run["mode"] for run in runs] == ["update", "inference", "summary"]
    assert all(run["status"] == "ok" and run["seconds"] > 0 and run["peak_rss_mib"] > 0 for run in runs)
    assert "peak RSS" in updated.stderr


def test_run_py_inference_without_a_production_model_says_what_to_do(replay_settings: Replay, tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    path.write_text(ANOMALOUS)
    failed = run_cli(replay_settings(tmp_path / "empty"), tmp_path, "--mode", "inference", "--file", str(path))
    assert failed.returncode == 1 and failed.stdout == ""
    assert "run `python run.py --mode update` first" in failed.stderr
