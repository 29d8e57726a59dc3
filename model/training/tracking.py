"""Experiment tracking with MLflow: every training run with its params, metrics, artifacts and the
DVC hash of the data it learned from.

    python -m model.training.tracking --config params.yaml          # `make experiments`: the runs compared
    python -m model.training.tracking --config params.yaml --ui     # `make mlflow-ui`: MLflow's UI on :5000

The store is local: an SQLite database and an artifact folder under paths.tracking
(`mlflow.db`, `artifacts/`), so nothing runs as a service and nothing leaves the machine; MLflow's
own UI serves that store on loopback when asked (--ui).
MLflow rather than `dvc exp`: training also happens outside the DVC pipeline (the
continuous-training loop in run.py retrains on a replayed stream), and every run, from
either path, must land in one place that can be searched and compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from model import configure_logging
from model.config import DEFAULT_CONFIG, ROOT, Settings, load_settings

log = logging.getLogger(__name__)

DATABASE = "mlflow.db"
SCORES = ("roc_auc", "pr_auc", "brier", "log_loss", "accuracy")


def tracking_uri(settings: Settings) -> str:
    return f"sqlite:///{settings.paths.tracking / DATABASE}"


def _mlflow(settings: Settings):
    # MLflow is imported on use: it is heavy, and only training and `make experiments` need it.
    import mlflow

    settings.paths.tracking.mkdir(parents=True, exist_ok=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(settings))
    if mlflow.get_experiment_by_name(settings.model.name) is None:
        mlflow.create_experiment(
            settings.model.name, artifact_location=(settings.paths.tracking / "artifacts").resolve().as_uri()
        )
    mlflow.set_experiment(settings.model.name)
    return mlflow


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, inner in value.items() for k, v in _flat(f"{prefix}.{key}", inner).items()}
    return {prefix: value}


def run_params(settings: Settings) -> dict[str, Any]:
    """What decides a model: data window and split, the feature contract, network, training, seed."""
    params: dict[str, Any] = {
        "seed": settings.seed,
        "data.source": settings.data.source,
        "features": ",".join(settings.features.names),
    }
    params |= _flat("data.window", settings.data.window.model_dump())
    params |= _flat("data.split", settings.data.split.model_dump())
    params |= _flat("model", settings.model.model_dump())
    params |= _flat("train", settings.train.model_dump())
    params["serving.threshold"] = settings.serving.threshold
    return params


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def track_training(
    settings: Settings,
    metrics: dict[str, Any],
    data_hash: str,
    kind: str = "pipeline",
    extra_params: dict[str, Any] | None = None,
    artifacts: Sequence[Path] = (),
) -> str:
    """Record one training run; returns its MLflow run id. `metrics` is what train() returned."""
    mlflow = _mlflow(settings)
    with mlflow.start_run(run_name=f"{kind} {metrics['model_version']}") as run:
        mlflow.set_tags(
            {
                "data_hash": data_hash,
                "model_version": metrics["model_version"],
                "kind": kind,
                "git_commit": git_commit(),
            }
        )
        mlflow.log_params(
            {key: str(value)[:500] for key, value in {**run_params(settings), **(extra_params or {})}.items()}
        )
        scores = {
            f"{split}_{name}": metrics[split][name]
            for split in ("valid", "test")
            for name in SCORES
            if split in metrics
        }
        scores |= {"threshold": metrics["threshold"], "epochs": metrics["epochs"]}
        if "train_seconds" in metrics:
            scores["train_seconds"] = metrics["train_seconds"]
        mlflow.log_metrics(scores)
        for step in metrics.get("history", []):
            mlflow.log_metrics(
                {"epoch_train_loss": step["train_loss"], "epoch_valid_roc_auc": step["valid_roc_auc"]},
                step=int(step["epoch"]),
            )
        with tempfile.TemporaryDirectory() as folder:
            summary = Path(folder) / "metrics.json"
            summary.write_text(json.dumps(metrics, indent=2))
            mlflow.log_artifact(str(summary))
        for path in artifacts:
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path=Path(path).name)
            elif Path(path).exists():
                mlflow.log_artifact(str(path))
        log.info("tracked run %s (%s) in %s", run.info.run_id, metrics["model_version"], tracking_uri(settings))
        return run.info.run_id


def runs(settings: Settings) -> pd.DataFrame:
    """Every tracked run, newest first: when, what kind, model version, data hash, key params and scores."""
    mlflow = _mlflow(settings)
    found = mlflow.search_runs(experiment_names=[settings.model.name], order_by=["attributes.start_time DESC"])
    if found.empty:
        return found
    columns = {
        "start_time": "started",
        "tags.kind": "kind",
        "tags.model_version": "model version",
        "tags.data_hash": "data hash",
        "params.data.window.end": "data until",
        "params.model.hidden": "hidden",
        "params.train.learning_rate": "learning rate",
        "metrics.epochs": "epochs",
        "metrics.valid_roc_auc": "valid ROC AUC",
        "metrics.test_roc_auc": "test ROC AUC",
        "metrics.test_log_loss": "test log loss",
        "metrics.train_seconds": "seconds",
        "run_id": "run",
    }
    table = found[[c for c in columns if c in found]].rename(columns=columns)
    table["started"] = pd.to_datetime(table["started"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    table["data hash"] = table["data hash"].str[:8]
    table["run"] = table["run"].str[:8]
    return table


def ui_command(settings: Settings, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """MLflow's tracking UI and API over this project's store, one worker."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri(settings),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--limit", type=int, default=20, help="newest runs shown")
    parser.add_argument("--ui", action="store_true", help="serve MLflow's UI over the store (until stopped)")
    parser.add_argument("--host", default="127.0.0.1", help="--ui: the address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="--ui: the port")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    if args.ui:
        settings.paths.tracking.mkdir(parents=True, exist_ok=True)
        print(f"MLflow UI on http://{args.host}:{args.port} over {tracking_uri(settings)}", flush=True)
        command = ui_command(settings, args.host, args.port)
        os.execv(command[0], command)
    table = runs(settings)
    if table.empty:
        print(f"no runs tracked yet in {tracking_uri(settings)}: train first (make train)")
        return
    print(table.head(args.limit).to_string(index=False, float_format=lambda value: f"{value:.4f}"))


if __name__ == "__main__":
    main()
