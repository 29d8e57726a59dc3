"""Experiment tracking: runs land in the local MLflow store with params, metrics, artifacts and the
data hash, and `make experiments` compares them."""

import subprocess
import sys

import yaml

from model.config import DEFAULT_CONFIG
from model.data.fingerprint import file_hash
from model.training.tracking import runs, track_training, tracking_uri
from model.training.weights import CONFIG


def test_training_runs_are_recorded_and_compared(settings, metrics, tmp_path):
    tracked = settings.with_overrides({"paths": {"tracking": tmp_path / "mlflow"}})
    data_hash = file_hash(settings.paths.raw) if settings.paths.raw.exists() else "0" * 32
    first = track_training(tracked, metrics, data_hash, artifacts=[settings.paths.model_dir / CONFIG])
    second = track_training(
        tracked,
        {**metrics, "test": {**metrics["test"], "roc_auc": 0.5}},
        data_hash,
        kind="update",
        extra_params={"warm_start": True},
    )

    import mlflow

    mlflow.set_tracking_uri(tracking_uri(tracked))
    run = mlflow.get_run(first)
    assert run.data.tags["data_hash"] == data_hash and run.data.tags["model_version"] == metrics["model_version"]
    assert run.data.params["model.hidden"] == str(settings.model.hidden)
    assert run.data.params["data.window.end"] == settings.data.window.end
    assert run.data.metrics["test_roc_auc"] == metrics["test"]["roc_auc"]
    history = mlflow.MlflowClient().get_metric_history(first, "epoch_train_loss")
    assert [m.step for m in history] == [step["epoch"] for step in metrics["history"]]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first)}
    assert {"metrics.json", CONFIG} <= artifacts
    assert mlflow.get_run(second).data.params["warm_start"] == "True"

    table = runs(tracked)
    assert list(table["run"]) == [second[:8], first[:8]]  # newest first
    assert list(table["kind"]) == ["update", "pipeline"]

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": str(DEFAULT_CONFIG), "paths": {"tracking": str(tmp_path / "mlflow")}}))
    shown = subprocess.run(
        [sys.executable, "-m", "model.training.tracking", "--config", str(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert metrics["model_version"] in shown.stdout and "test ROC AUC" in shown.stdout
