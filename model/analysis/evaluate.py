"""The evaluate stage: the exported model against a logistic regression on the same features
and test months, and the tables `dvc plots show` draws (ROC, calibration, training curves).

    python -m model.analysis.evaluate --config params.yaml     # or: make evaluate
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    roc_curve,
)

from model import configure_logging
from model.analysis.tabular_features import logistic_regression
from model.artifact.predict import ServedModel, load_served_model, predict_probability
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.prepare import load_table
from model.data.sources import TARGET
from model.data.split import split_rows
from model.training.metrics import classification_metrics

log = logging.getLogger(__name__)


def compare_with_logistic_regression(
    settings: Settings, table: pd.DataFrame, mlp: dict[str, Any], threshold: float
) -> dict[str, Any]:
    """The linear reference on the test months, scored at the served model's threshold."""
    train, test = split_rows(table, "train"), split_rows(table, "test")
    pipeline = logistic_regression(settings)
    started = time.perf_counter()
    pipeline.fit(train[settings.features.names], train[TARGET])
    seconds = time.perf_counter() - started
    probability = pipeline.predict_proba(test[settings.features.names])[:, 1]
    linear = classification_metrics(test[TARGET].to_numpy(), probability, threshold)
    return {
        "test": {"mlp": mlp["test"], "logistic_regression": linear},
        "logistic_regression_fit_seconds": seconds,
        "mlp_minus_logistic_roc_auc": mlp["test"]["roc_auc"] - linear["roc_auc"],
    }


def curves(
    labels: np.ndarray, probability: np.ndarray, history: list[dict[str, float]], points: int = 200
) -> dict[str, pd.DataFrame]:
    """The tables `dvc plots show` draws: ROC (at most `points` thresholds), calibration (ten
    equal-width bins) and the training curves per epoch."""
    fpr, tpr, _ = roc_curve(labels, probability, drop_intermediate=True)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
    observed, predicted = calibration_curve(labels, probability, n_bins=10)
    return {
        "roc": pd.DataFrame({"fpr": fpr[keep], "tpr": tpr[keep]}).round(5),
        "calibration": pd.DataFrame({"predicted": predicted, "observed": observed}).round(5),
        "training": pd.DataFrame(history).round(6),
    }


def write_plots(settings: Settings, table: pd.DataFrame, model: ServedModel, schema: dict) -> None:
    """The test months scored by the exported model, as CSV tables under paths.plots."""
    test = split_rows(table, "test")
    probability = predict_probability(model, schema, test)
    history = json.loads(settings.paths.metrics.read_text())["history"]
    settings.paths.plots.mkdir(parents=True, exist_ok=True)
    for name, frame in curves(test[TARGET].to_numpy(), probability, history).items():
        frame.to_csv(settings.paths.plots / f"{name}.csv", index=False)
    log.info("wrote ROC, calibration and training curves to %s", settings.paths.plots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    table = load_table(settings)
    model, schema = load_served_model(settings.paths.export_dir)
    result = compare_with_logistic_regression(
        settings, table, json.loads(settings.paths.metrics.read_text()), schema["x-model"]["threshold"]
    )
    settings.paths.comparison.write_text(json.dumps(result, indent=2) + "\n")
    write_plots(settings, table, model, schema)
    log.info(
        "test ROC AUC: MLP %.4f, logistic regression %.4f",
        result["test"]["mlp"]["roc_auc"],
        result["test"]["logistic_regression"]["roc_auc"],
    )


if __name__ == "__main__":
    main()
