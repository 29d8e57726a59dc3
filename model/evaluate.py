"""Score predictions, and compare the MLP with a logistic regression on the same features."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data import SPLIT, load_table
from model.report import block_markers, replace_block
from model.sources import TARGET

log = logging.getLogger(__name__)


def classification_metrics(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    probability = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "brier": float(brier_score_loss(y_true, probability)),
        "log_loss": float(log_loss(y_true, probability, labels=[0, 1])),
        "accuracy": float(accuracy_score(y_true, probability >= threshold)),
        "positive_rate": float(np.mean(y_true)),
        "rows": int(len(y_true)),
    }


# Decision thresholds considered when the threshold is chosen by cost.
THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def expected_cost(labels: np.ndarray, probability: np.ndarray, thresholds: np.ndarray,
                  missed_positive_cost: float, false_alarm_cost: float) -> np.ndarray:
    """Cost per flight at each threshold: late flights nobody was warned about, and warnings
    for flights that arrived on time, each at its price."""
    labels = np.asarray(labels).astype(bool)
    warned = np.asarray(probability)[None, :] >= np.asarray(thresholds)[:, None]
    missed = (~warned & labels).sum(1)
    false_alarms = (warned & ~labels).sum(1)
    return (missed_positive_cost * missed + false_alarm_cost * false_alarms) / len(labels)


def choose_threshold(labels: np.ndarray, probability: np.ndarray, missed_positive_cost: float,
                     false_alarm_cost: float, thresholds: np.ndarray = THRESHOLDS) -> float:
    """The grid threshold with the lowest expected cost on these rows (the lowest on ties)."""
    costs = expected_cost(labels, probability, thresholds, missed_positive_cost, false_alarm_cost)
    return float(thresholds[int(np.argmin(costs))])


def served_threshold(settings: Settings) -> float:
    """The decision threshold the served model uses: the configured number, or the one
    training chose by cost on the validation month (`serving.threshold: min_cost`)."""
    if settings.serving.threshold != "min_cost":
        return float(settings.serving.threshold)
    if not settings.paths.metrics.exists():
        raise FileNotFoundError(f"serving.threshold is min_cost but {settings.paths.metrics} is missing: train first")
    return float(json.loads(settings.paths.metrics.read_text())["threshold"])


def _sine_cosine(values: np.ndarray, periods: list[float]) -> np.ndarray:
    angle = 2 * np.pi * np.asarray(values, dtype=np.float64) / np.asarray(periods, dtype=np.float64)
    return np.hstack([np.sin(angle), np.cos(angle)])


def _sine_cosine_names(transformer: FunctionTransformer, names: list[str]) -> list[str]:
    return [f"{name}_sin" for name in names] + [f"{name}_cos" for name in names]


def flight_features(settings: Settings, categories: Literal["one_hot", "ordinal"] = "one_hot",
                    scale: bool = True) -> ColumnTransformer:
    """The MLP's inputs, for scikit-learn models, so every model sees the same facts.

    Categories rarer than `min_category_count` share one level and unseen ones are
    ignored (one-hot) or missing (ordinal codes, for trees that split on categories
    natively). Numbers are median-imputed with a missing indicator each and, with
    `scale`, standardized: distances and penalties need it, trees do not, and their
    splits read in real units without it. Periodic numbers (the month) become sine and
    cosine, so December sits next to January as in the network, instead of beyond
    September where no model trained on January-September has seen it.
    Categorical columns come first, in config order.
    """
    features = settings.features
    if categories == "one_hot":
        encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=settings.model.min_category_count)
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                 min_frequency=settings.model.min_category_count)
    periods = {name: spec.period for name, spec in features.numeric.items() if spec.period}
    plain = [name for name in features.numeric if name not in periods]
    imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    columns = [("categorical", encoder, list(features.categorical)),
               ("numeric", make_pipeline(imputer, StandardScaler()) if scale else imputer, plain)]
    if periods:
        cyclic = FunctionTransformer(_sine_cosine, kw_args={"periods": list(periods.values())},
                                     feature_names_out=_sine_cosine_names)
        columns.append(("periodic", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                                  cyclic), list(periods)))
    return ColumnTransformer(columns)


def logistic_regression(settings: Settings) -> Pipeline:
    """The linear reference, on the same features as the MLP."""
    return make_pipeline(flight_features(settings), LogisticRegression(max_iter=2000))


def compare_with_logistic_regression(settings: Settings, table: pd.DataFrame, mlp: dict[str, Any]) -> dict[str, Any]:
    train, test = table[table[SPLIT] == "train"], table[table[SPLIT] == "test"]
    pipeline = logistic_regression(settings)
    started = time.perf_counter()
    pipeline.fit(train[settings.features.names], train[TARGET])
    seconds = time.perf_counter() - started
    probability = pipeline.predict_proba(test[settings.features.names])[:, 1]
    linear = classification_metrics(test[TARGET].to_numpy(), probability, mlp["threshold"])
    return {
        "test": {"mlp": mlp["test"], "logistic_regression": linear},
        "logistic_regression_fit_seconds": seconds,
        "mlp_minus_logistic_roc_auc": mlp["test"]["roc_auc"] - linear["roc_auc"],
    }


def curves(labels: np.ndarray, probability: np.ndarray, history: list[dict[str, float]], points: int = 200
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


def write_plots(settings: Settings, table: pd.DataFrame) -> None:
    """The test months scored by the trained weights, as CSV tables under paths.plots."""
    from model.export import input_schema, load_network
    from model.predict import predict_frame

    network, config = load_network(settings.paths.model_dir)
    test = table[table[SPLIT] == "test"]
    scored = predict_frame(network, input_schema(config), test)
    history = json.loads(settings.paths.metrics.read_text())["history"]
    settings.paths.plots.mkdir(parents=True, exist_ok=True)
    for name, frame in curves(test[TARGET].to_numpy(), scored[f"{settings.data.target}_probability"].to_numpy(),
                              history).items():
        frame.to_csv(settings.paths.plots / f"{name}.csv", index=False)
    log.info("wrote ROC, calibration and training curves to %s", settings.paths.plots)


RESULTS_START, RESULTS_END = RESULTS_MARKERS = block_markers("results", "make results")


def render_results(metrics: dict[str, Any], comparison: dict[str, Any], baselines: str | None = None) -> str:
    """The README's results block: test-month metrics of the served model and the linear
    reference, and the baselines' comparison table (markdown) when it has been computed."""
    rows = [("MLP (served)", comparison["test"]["mlp"]),
            ("logistic regression", comparison["test"]["logistic_regression"])]
    lines = [
        f"Model `{metrics['model_version']}`, test months ({comparison['test']['mlp']['rows']:,} flights, "
        f"{comparison['test']['mlp']['positive_rate']:.1%} late), threshold {metrics['threshold']}; "
        f"trained in {metrics['train_seconds']:.0f} s ({metrics['epochs']} epochs).",
        "",
        "| model | ROC AUC | PR AUC | Brier | log loss | accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {name} | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {m['brier']:.3f} | {m['log_loss']:.3f} | "
          f"{m['accuracy']:.3f} |" for name, m in rows),
        *(["", "All baselines on the same split, with forward-chaining cross-validation over the training and "
               "validation months (`make report`):", "", baselines.strip()] if baselines else []),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--readme", type=Path, help="only rewrite this README's results block from the JSON files")
    parser.add_argument("--example-report", type=Path, help="with --readme: also copy the latest report.html here")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    mlp = json.loads(settings.paths.metrics.read_text())
    if args.readme:
        from model.baselines import models_markdown  # baselines and train build on this module
        from model.train import run_record

        mlp = {**mlp, **json.loads(run_record(settings).read_text())}

        models = models_markdown(settings.paths.report_dir / "baselines")
        comparison = json.loads(settings.paths.comparison.read_text())
        replace_block(args.readme, RESULTS_MARKERS, render_results(mlp, comparison, models))
        log.info("updated the results in %s", args.readme)
        if args.example_report:
            shutil.copyfile(settings.paths.report_dir / "report.html", args.example_report)
        return
    table = load_table(settings)
    result = compare_with_logistic_regression(settings, table, mlp)
    settings.paths.comparison.write_text(json.dumps(result, indent=2) + "\n")
    write_plots(settings, table)
    log.info("test ROC AUC: MLP %.4f, logistic regression %.4f",
             result["test"]["mlp"]["roc_auc"], result["test"]["logistic_regression"]["roc_auc"])


if __name__ == "__main__":
    main()
