"""How good is the MLP, really: scikit-learn baselines on the same features, validation over
time, and the MLP's preprocessing variants.

    python -m model.analysis.baselines --config params.yaml     # writes <report_dir>/baselines/

Every model is trained on the training months and scored on the validation month and the
test months; the served MLP is scored through its exported model.pt, as it answers requests.
Cross-validation walks forward in time (each fold trains only on flights before the ones it
is scored on), which is how the model is used: trained on the past, asked about the future.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve
from sklearn.model_selection import TimeSeriesSplit
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.tree import DecisionTreeClassifier

from model.analysis.layout import Section, save_figure
from model.analysis.section_job import section_main
from model.analysis.tabular_features import logistic_regression, tabular_features
from model.artifact.export import export_model
from model.artifact.predict import exported_threshold, load_served_model, predict_probability
from model.base.markdown import markdown
from model.config import Settings
from model.data.prepare import load_table
from model.data.sources import TARGET, TIME
from model.data.split import split_frames, split_rows
from model.training.metrics import classification_metrics
from model.training.network import TabularNet
from model.training.train import Encoded, fit, network_config, predict_encoded, run_record, seed_everything, train

log = logging.getLogger(__name__)

MLP = "mlp"
LABELS = {
    MLP: "MLP (served)",
    "logistic_regression": "logistic regression",
    "knn": "k nearest neighbours",
    "decision_tree": "decision tree",
    "gradient_boosting": "gradient boosting",
}
RESULTS = "baselines.json"
TABLE = "comparison.md"
VARIANTS_DIR = "variants"  # each variant's weights and model.pt, kept for a closer look
# Leaves of at least this many flights keep a shallow tree's probabilities away from 0 and 1,
# where one surprise costs a log loss of 16.
TREE_MIN_LEAF = 100
# In cross-validation the MLP trains for a few epochs only (on the full data the best epoch
# comes early), stopping on the last tenth of each fold's own training flights.
CV_MAX_EPOCHS = 3
CV_STOP_SHARE = 0.1
VARIANTS = [
    (missing, encoding) for missing in ("median_indicator", "constant") for encoding in ("embedding", "one_hot")
]


def baseline_models(settings: Settings) -> dict[str, Pipeline]:
    """Unfitted pipelines, each over the MLP's features (model.analysis.evaluate.tabular_features)."""
    options = settings.evaluation
    dense = tabular_features(settings).set_params(sparse_threshold=0)  # sparse distances are ~4x slower
    return {
        "logistic_regression": logistic_regression(settings),
        "knn": make_pipeline(dense, KNeighborsClassifier(n_neighbors=options.knn_neighbors)),
        "decision_tree": make_pipeline(
            tabular_features(settings, scale=False),
            DecisionTreeClassifier(
                max_depth=options.tree_max_depth, min_samples_leaf=TREE_MIN_LEAF, random_state=settings.seed
            ),
        ),
        "gradient_boosting": make_pipeline(
            tabular_features(settings, categories="ordinal", scale=False),
            HistGradientBoostingClassifier(
                categorical_features=list(range(len(settings.features.categorical))), random_state=settings.seed
            ),
        ),
    }


def fit_baseline(name: str, model: Pipeline, train_rows: pd.DataFrame, settings: Settings) -> Pipeline:
    """Fit on the training rows; kNN keeps only the most recent ones, since its prediction
    cost grows with every row it remembers."""
    if name == "knn":
        train_rows = train_rows.sort_values(TIME, kind="stable").tail(settings.evaluation.knn_max_train_rows)
    return model.fit(train_rows[settings.features.names], train_rows[TARGET])


def late_probability(model: ClassifierMixin, frame: pd.DataFrame, settings: Settings) -> np.ndarray:
    return model.predict_proba(frame[settings.features.names])[:, 1]


def _timed(work: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work(*args)
    return result, time.perf_counter() - started


def _scores(settings: Settings, labels: dict[str, np.ndarray], probability: dict[str, np.ndarray]) -> dict:
    threshold = exported_threshold(settings.paths.export_dir)
    return {split: classification_metrics(labels[split], probability[split], threshold) for split in ("valid", "test")}


def score_baselines(settings: Settings, table: pd.DataFrame) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Each baseline trained on the training months: validation and test metrics, seconds to
    train and milliseconds per 1,000 predictions; and its test-month probabilities."""
    splits = split_frames(table)
    labels = {name: frame[TARGET].to_numpy() for name, frame in splits.items()}
    results, test_probability = {}, {}
    for name, model in baseline_models(settings).items():
        model, fit_seconds = _timed(fit_baseline, name, model, splits["train"], settings)
        valid = late_probability(model, splits["valid"], settings)
        test, predict_seconds = _timed(late_probability, model, splits["test"], settings)
        results[name] = {
            **_scores(settings, labels, {"valid": valid, "test": test}),
            "fit_seconds": fit_seconds,
            "predict_ms_per_1000_rows": 1e6 * predict_seconds / len(splits["test"]),
        }
        test_probability[name] = test
        log.info(
            "%s: valid ROC AUC %.4f, test ROC AUC %.4f (fit %.1f s)",
            name,
            results[name]["valid"]["roc_auc"],
            results[name]["test"]["roc_auc"],
            fit_seconds,
        )
    return results, test_probability


def score_served_mlp(settings: Settings, table: pd.DataFrame) -> tuple[dict[str, Any], np.ndarray]:
    """The exported model.pt on the same rows, timed the same way; its training time comes
    from the metrics file training wrote."""
    model, schema = load_served_model(settings.paths.export_dir)
    frames = split_frames(table, ("valid", "test"))
    valid = predict_probability(model, schema, frames["valid"])
    test, predict_seconds = _timed(predict_probability, model, schema, frames["test"])
    trained = json.loads(run_record(settings).read_text()) if run_record(settings).exists() else {}
    version = schema["x-model"]["version"]
    if trained.get("model_version") != version:
        log.warning(
            "%s describes model %s, not the exported %s: its training time is left out",
            run_record(settings),
            trained.get("model_version"),
            version,
        )
        trained = {}
    labels = {name: frame[TARGET].to_numpy() for name, frame in frames.items()}
    result = {
        **_scores(settings, labels, {"valid": valid, "test": test}),
        "model_version": version,
        "fit_seconds": trained.get("train_seconds"),
        "predict_ms_per_1000_rows": 1e6 * predict_seconds / len(frames["test"]),
    }
    return result, test


def time_folds(times: pd.Series, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """TimeSeriesSplit over the rows in time order: positions of (training, validation) rows
    per fold, folds in time order, each fold's training rows all scheduled no later than its
    validation rows."""
    order = np.argsort(times.to_numpy(), kind="stable")
    return [(order[fit_at], order[score_at]) for fit_at, score_at in TimeSeriesSplit(folds).split(order)]


def mlp_fold_probability(settings: Settings, train_rows: pd.DataFrame, score_rows: pd.DataFrame) -> np.ndarray:
    """Train a fresh MLP on one fold's training rows (in time order) and score its validation
    rows. Early stopping looks at the fold's latest training rows, never at the rows scored."""
    short = settings.with_overrides({"train": {"max_epochs": min(CV_MAX_EPOCHS, settings.train.max_epochs)}})
    generator = seed_everything(settings.seed)
    cut = int(len(train_rows) * (1 - CV_STOP_SHARE))
    network = TabularNet.from_config(network_config(settings, train_rows.iloc[:cut]))
    fit(network, Encoded(network, train_rows.iloc[:cut]), Encoded(network, train_rows.iloc[cut:]), short, generator)
    return predict_encoded(network, Encoded(network, score_rows))


def cross_validate_over_time(settings: Settings, table: pd.DataFrame, names: list[str] | None = None) -> dict[str, Any]:
    """Forward-chaining cross-validation over the training and validation months (the test
    months stay unseen): ROC AUC per fold, mean and standard deviation per model."""
    names = names or [*baseline_models(settings), MLP]
    development = split_rows(table, "train", "valid").sort_values(TIME, kind="stable").reset_index(drop=True)
    folds: list[dict[str, Any]] = []
    scores: dict[str, list[float]] = {name: [] for name in names}
    for number, (fit_at, score_at) in enumerate(time_folds(development[TIME], settings.evaluation.cv_folds), 1):
        train_rows, score_rows = development.iloc[fit_at], development.iloc[score_at]
        labels = score_rows[TARGET].to_numpy()
        folds.append(
            {
                "fold": number,
                "train_rows": len(train_rows),
                "valid_rows": len(score_rows),
                "train_start": str(train_rows[TIME].min()),
                "train_end": str(train_rows[TIME].max()),
                "valid_start": str(score_rows[TIME].min()),
                "valid_end": str(score_rows[TIME].max()),
            }
        )
        for name in names:
            if name == MLP:
                probability = mlp_fold_probability(settings, train_rows, score_rows)
            else:
                model = fit_baseline(name, baseline_models(settings)[name], train_rows, settings)
                probability = late_probability(model, score_rows, settings)
            scores[name].append(float(roc_auc_score(labels, probability)))
        log.info(
            "fold %d/%d (%s to %s): %s",
            number,
            settings.evaluation.cv_folds,
            folds[-1]["valid_start"][:10],
            folds[-1]["valid_end"][:10],
            ", ".join(f"{name} {values[-1]:.3f}" for name, values in scores.items()),
        )
    return {
        "folds": folds,
        "roc_auc": {
            name: {"scores": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
            for name, values in scores.items()
        },
    }


def compare_preprocessing_variants(settings: Settings, table: pd.DataFrame, work_dir: Path) -> list[dict[str, Any]]:
    """Train the MLP with each way of handling missing numbers and categories, export each,
    and score each exported model.pt on the validation month."""
    valid = split_rows(table, "valid")
    rows = []
    for missing, encoding in VARIANTS:
        folder = Path(work_dir) / f"{missing}-{encoding}"
        variant = settings.with_overrides(
            {
                "paths": {
                    "model_dir": folder / "model",
                    "export_dir": folder / "export",
                    "metrics": folder / "metrics.json",
                },
                "model": {"missing": missing, "categorical_encoding": encoding},
            }
        )
        trained = train(variant, table)
        export_model(variant.paths.model_dir, variant.paths.export_dir)
        model, schema = load_served_model(variant.paths.export_dir)
        probability = predict_probability(model, schema, valid)
        threshold = exported_threshold(settings.paths.export_dir)  # the shipped model's, for every variant
        scored = classification_metrics(valid[TARGET].to_numpy(), probability, threshold)
        rows.append(
            {
                "missing": missing,
                "categorical_encoding": encoding,
                "shipped": (missing, encoding) == (settings.model.missing, settings.model.categorical_encoding),
                "valid_roc_auc": scored["roc_auc"],
                "valid_log_loss": scored["log_loss"],
                "epochs": trained["epochs"],
                "train_seconds": trained["train_seconds"],
                "export_dir": str(variant.paths.export_dir),
            }
        )
        log.info(
            "variant %s + %s: valid ROC AUC %.4f, log loss %.4f",
            missing,
            encoding,
            scored["roc_auc"],
            scored["log_loss"],
        )
    return rows


def plot_curves(labels: np.ndarray, probability: dict[str, np.ndarray], out_dir: Path) -> dict[str, Path]:
    """ROC and precision-recall curves of every model on the test months."""
    roc, roc_axis = plt.subplots(figsize=(6, 5))
    pr, pr_axis = plt.subplots(figsize=(6, 5))
    for name, values in probability.items():
        false_positive, true_positive, _ = roc_curve(labels, values)
        roc_axis.plot(false_positive, true_positive, label=f"{LABELS[name]} ({roc_auc_score(labels, values):.3f})")
        precision, recall, _ = precision_recall_curve(labels, values)
        pr_axis.plot(recall, precision, label=LABELS[name])
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test months")
    pr_axis.axhline(labels.mean(), color="grey", linestyle=":", label="chance (late share)")
    pr_axis.set(xlabel="recall", ylabel="precision", title="Precision-recall, test months")
    for axis in (roc_axis, pr_axis):
        axis.legend(fontsize=8)
    return {"roc": save_figure(roc, out_dir / "roc.png"), "pr": save_figure(pr, out_dir / "pr.png")}


def plot_cross_validation(cv: dict[str, Any], out_dir: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    ticks = [f"{fold['valid_start'][:10]}\nto {fold['valid_end'][:10]}" for fold in cv["folds"]]
    for name, result in cv["roc_auc"].items():
        label = "MLP (retrained per fold)" if name == MLP else LABELS[name]
        axis.plot(range(len(ticks)), result["scores"], marker="o", label=label)
    axis.set_xticks(range(len(ticks)), ticks, fontsize=7)
    axis.set(ylabel="ROC AUC", title="Forward-chaining cross-validation: validation period of each fold")
    axis.legend(fontsize=8)
    return save_figure(figure, out_dir / "cross_validation.png")


def comparison_tables(result: dict[str, Any]) -> dict[str, pd.DataFrame]:
    models = pd.DataFrame(
        [
            {
                "model": LABELS[name],
                "test ROC AUC": r["test"]["roc_auc"],
                "test PR AUC": r["test"]["pr_auc"],
                "test log loss": r["test"]["log_loss"],
                "test Brier": r["test"]["brier"],
                "valid ROC AUC": r["valid"]["roc_auc"],
                "CV ROC AUC mean": result["cross_validation"]["roc_auc"][name]["mean"],
                "CV ROC AUC std": result["cross_validation"]["roc_auc"][name]["std"],
                "train s": r["fit_seconds"],
                "ms / 1,000 rows": r["predict_ms_per_1000_rows"],
            }
            for name, r in result["models"].items()
        ]
    )
    variants = pd.DataFrame(result["preprocessing_variants"]).drop(columns="export_dir")
    return {"models": models, "variants": variants}


def run(settings: Settings, table: pd.DataFrame | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """The whole comparison; writes baselines.json, comparison.md, the figures and the
    variants' models into out_dir."""
    started = time.perf_counter()
    torch.set_num_threads(settings.train.threads)
    out_dir = Path(out_dir or settings.paths.report_dir / "baselines")
    out_dir.mkdir(parents=True, exist_ok=True)
    table = load_table(settings) if table is None else table

    mlp, mlp_test = score_served_mlp(settings, table)
    models, test_probability = score_baselines(settings, table)
    cv = cross_validate_over_time(settings, table)
    variants = compare_preprocessing_variants(settings, table, out_dir / VARIANTS_DIR)
    result: dict[str, Any]
    result = {
        "models": {MLP: mlp, **models},
        "cross_validation": cv,
        "preprocessing_variants": variants,
        "shipped_preprocessing": {
            "missing": settings.model.missing,
            "categorical_encoding": settings.model.categorical_encoding,
        },
    }
    plot_curves(split_rows(table, "test").loc[:, TARGET].to_numpy(), {MLP: mlp_test, **test_probability}, out_dir)
    plot_cross_validation(cv, out_dir)
    result["seconds"] = time.perf_counter() - started
    (out_dir / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    tables = comparison_tables(result)
    (out_dir / TABLE).write_text(
        f"## Models\n\n{markdown(tables['models'])}\n"
        f"## MLP preprocessing variants (validation month)\n\n{markdown(tables['variants'])}"
    )
    log.info("baselines written to %s in %.0f s", out_dir, result["seconds"])
    return result


def models_markdown(out_dir: Path) -> str | None:
    """The models table `run` wrote (markdown), or None before it has run."""
    path = Path(out_dir) / TABLE
    return path.read_text().split("## ")[1].split("\n", 1)[1].strip() if path.exists() else None


def build_section(out_dir: Path) -> Section:
    """The report's section, from what `run` wrote into out_dir."""
    out_dir = Path(out_dir)
    result = json.loads((out_dir / RESULTS).read_text())
    tables = comparison_tables(result)
    models = result["models"]
    best = max(models, key=lambda name: models[name]["test"]["roc_auc"])
    shipped = next(row for row in result["preprocessing_variants"] if row["shipped"])
    top = max(result["preprocessing_variants"], key=lambda row: row["valid_roc_auc"])
    intro = (
        f"Every model sees the MLP's features, trains on the training months and is scored on the validation "
        f"month and the test months. Best test ROC AUC: {LABELS[best]} ({models[best]['test']['roc_auc']:.3f}); "
        f"the served MLP {models[MLP]['test']['roc_auc']:.3f}, the logistic regression "
        f"{models['logistic_regression']['test']['roc_auc']:.3f}. Cross-validation walks forward in time "
        f"over the training and validation months ({len(result['cross_validation']['folds'])} folds, each "
        f"trained only on earlier flights). The config ships {shipped['missing']} + "
        f"{shipped['categorical_encoding']} (validation ROC AUC {shipped['valid_roc_auc']:.3f}); the best "
        f"variant on validation is {top['missing']} + {top['categorical_encoding']} "
        f"({top['valid_roc_auc']:.3f})."
    )
    folds = pd.DataFrame(result["cross_validation"]["folds"])
    return Section(
        title="Baselines and validation over time",
        intro=intro,
        tables=[
            ("Models: test months, validation month, cross-validation and cost", tables["models"]),
            ("Cross-validation folds (training and validation periods)", folds),
            ("MLP preprocessing variants on the validation month", tables["variants"]),
        ],
        figures=[
            ("ROC curves on the test months", out_dir / "roc.png"),
            ("Precision-recall curves on the test months", out_dir / "pr.png"),
            ("ROC AUC of each cross-validation fold", out_dir / "cross_validation.png"),
        ],
    )


def main() -> None:
    section_main(__doc__, "baselines", run)


if __name__ == "__main__":
    main()
