"""`make mlflow-ui`: MLflow's own UI over the project's tracking store, opened in headless
Chromium. The training runs are listed, and a run's page shows its params, metrics and the hash
of the data it learned from."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests
import yaml

from harness.torchserve import stop
from model.config import ROOT
from model.data.fingerprint import rows_hash
from model.lifecycle.ports import free_ports
from model.training.tracking import track_training
from tests.browser import visit

# MLflow's UI asks who the user is, which only its authentication app answers: a 404 without it,
# the UI's own request, which it tolerates.
MLFLOW_OWN = (
    "/ajax-api/2.0/mlflow/users/current",
    "Failed to load resource: the server responded with a status of 404",
)


@pytest.fixture(scope="module")
def tracked(settings, table, metrics, tmp_path_factory):
    """Two runs in a fresh store, as training and an update record them."""
    folder = tmp_path_factory.mktemp("mlflow-ui")
    store = settings.with_overrides({"paths": {"tracking": folder / "mlflow"}})
    data_hash = rows_hash(table)
    first = track_training(store, metrics, data_hash)
    second = track_training(
        store,
        {**metrics, "model_version": metrics["model_version"] + "-update"},
        data_hash,
        kind="update",
        extra_params={"warm_start": True},
    )
    config = folder / "params.yaml"
    config.write_text(yaml.safe_dump(store.model_dump(mode="json"), sort_keys=False))
    return store, config, data_hash, [first, second]


@pytest.fixture(scope="module")
def ui(tracked, tmp_path_factory):
    """The UI started as `make mlflow-ui` starts it, on a free port; always stopped."""
    _, config, _, _ = tracked
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("mlflow-ui-log") / "mlflow.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "model.training.tracking", "--config", str(config), "--ui", "--port", str(port)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        stop(process)


def experiment_id(ui: str, name: str) -> str:
    reply = requests.get(f"{ui}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}, timeout=10)
    return reply.json()["experiment"]["experiment_id"]


def own_problems(problems: list[str]) -> list[str]:
    return [problem for problem in problems if not any(known in problem for known in MLFLOW_OWN)]


def test_the_ui_lists_the_pipelines_runs(ui, tracked, metrics, browser, tmp_path):
    store, version = tracked[0], metrics["model_version"]
    seen = visit(
        browser,
        f"{ui}/#/experiments/{experiment_id(ui, store.model.name)}/runs",
        tmp_path / "runs.png",
        wait_for=f"update {version}-update",
    )
    assert own_problems(seen.problems) == []
    assert "2 matching runs" in seen.text and f"pipeline {version}" in seen.text
    assert seen.screenshot.stat().st_size > 10_000


def test_a_runs_page_shows_its_params_metrics_and_data_hash(ui, tracked, settings, metrics, browser, tmp_path):
    store, _, data_hash, (first, _) = tracked
    url = f"{ui}/#/experiments/{experiment_id(ui, store.model.name)}/runs/{first}"
    seen = visit(browser, url, tmp_path / "run.png", wait_for=data_hash)
    assert own_problems(seen.problems) == []
    text = seen.text
    assert "data_hash" in text and data_hash in text and metrics["model_version"] in text
    for param, value in (
        ("model.hidden", str(settings.model.hidden)),
        ("data.window.end", settings.data.window.end),
        ("train.learning_rate", str(settings.train.learning_rate)),
    ):
        assert param in text and value in text, param
    for metric in ("valid_roc_auc", "test_roc_auc", "test_log_loss", "threshold"):
        assert metric in text, metric
