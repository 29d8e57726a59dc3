"""Drift of a batch against the training reference, per feature and for the model's predictions.

    python -m model.analysis.drift --config params.yaml [--current batch.csv]

Every feature gets two numbers. The population stability index (PSI) is the size of the move:
numbers are cut into `psi_bins` quantile bins of the reference plus one bin for missing values,
categories are counted as they are ("" is a missing category); shares are floored at a small
epsilon so an empty bin does not make PSI infinite. A test says whether the move could be chance:
two-sample Kolmogorov-Smirnov for numbers, chi-square over the category counts for categories.
The predicted probabilities get PSI and KS like a number.

Flag rule: a feature (or the predictions) drifts when PSI >= drift.psi_threshold AND the test's
p-value < drift.p_value. PSI hardly depends on the sample size, so on large batches it decides:
there any difference gives a tiny p-value (at 50,000 rows KS rejects shifts nobody would act on).
On small batches PSI is noisy and can pass the threshold by chance, and the p-value decides.
A test that cannot run (no values on one side) does not veto PSI.

Writes drift.json (per feature, predictions, summary) and PNG figures into the output folder:
by default the test split against the train split of the prepared table, into
<paths.report_dir>/drift; `--current` takes a CSV or Parquet of request fields instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, ks_2samp

from model import configure_logging
from model.analysis.layout import Section, save_figure  # also puts matplotlib on its file-only backend
from model.artifact.export import TORCHSCRIPT
from model.artifact.predict import load_served_model, predict_probability
from model.base.tables import read_table
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.prepare import load_table
from model.data.quality import clean
from model.data.split import split_rows

log = logging.getLogger(__name__)

EPSILON = 1e-4  # floor of a bin's share: an empty bin on one side costs a finite PSI
NUMERIC, CATEGORICAL, PREDICTION = "numeric", "categorical", "prediction"
KS, CHI_SQUARE = "ks", "chi-square"
COLUMNS = ["feature", "kind", "psi", "test", "statistic", "p_value", "drifted"]
JSON_NAME = "drift.json"
SHOWN_FEATURES = 4  # the most drifted features get a distribution plot


@dataclass
class DriftReport:
    table: pd.DataFrame  # COLUMNS, one row per feature, then the predictions when scored
    json_path: Path
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG)


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins."""
    reference = np.clip(reference_counts / max(reference_counts.sum(), 1), EPSILON, None)
    current = np.clip(current_counts / max(current_counts.sum(), 1), EPSILON, None)
    return float(np.sum((current - reference) * np.log(current / reference)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles; repeated edges (few distinct values) merge."""
    present = reference[~np.isnan(reference)]
    if present.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))


def numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per quantile bin, then the count of missing values as one more bin."""
    missing = np.isnan(values)
    bins = np.bincount(np.searchsorted(edges, values[~missing], side="right"), minlength=edges.size + 1)
    return np.append(bins, missing.sum())


def _flag(value: float, p_value: float, settings: Settings) -> bool:
    """The flag rule of the module docstring; a test that could not run (NaN) does not veto."""
    unlikely = math.isnan(p_value) or p_value < settings.drift.p_value
    return bool(value >= settings.drift.psi_threshold and unlikely)


def numeric_drift(
    name: str, reference: pd.Series, current: pd.Series, settings: Settings, kind: str = NUMERIC
) -> dict[str, Any]:
    """PSI over the reference's quantile bins (plus missing) and KS over the present values."""
    reference_values = pd.to_numeric(reference, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    current_values = pd.to_numeric(current, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    edges = quantile_edges(reference_values, settings.drift.psi_bins)
    value = psi(numeric_counts(reference_values, edges), numeric_counts(current_values, edges))
    left, right = reference_values[~np.isnan(reference_values)], current_values[~np.isnan(current_values)]
    # Asymptotic p-values: the exact method gives up (with a warning) on tied values such as days.
    statistic, p_value = ks_2samp(left, right, method="asymp")[:2] if left.size and right.size else (math.nan, math.nan)
    return {
        "feature": name,
        "kind": kind,
        "psi": value,
        "test": KS,
        "statistic": float(statistic),
        "p_value": float(p_value),
        "drifted": _flag(value, p_value, settings),
    }


def categorical_drift(name: str, reference: pd.Series, current: pd.Series, settings: Settings) -> dict[str, Any]:
    """PSI and chi-square over the categories of both sides; a category new to the current batch counts."""
    counts = (
        pd.concat(
            [
                _categories(reference).value_counts().rename("reference"),
                _categories(current).value_counts().rename("current"),
            ],
            axis=1,
        )
        .fillna(0)
        .astype("float64")
    )
    value = psi(counts["reference"].to_numpy(), counts["current"].to_numpy())
    if len(counts) < 2:  # one category on both sides: nothing can have moved
        statistic, p_value = 0.0, 1.0
    elif (counts.sum() == 0).any():  # no rows on one side: no test
        statistic, p_value = math.nan, math.nan
    else:
        result = chi2_contingency(counts.to_numpy().T)
        statistic, p_value = result.statistic, result.pvalue
    return {
        "feature": name,
        "kind": CATEGORICAL,
        "psi": value,
        "test": CHI_SQUARE,
        "statistic": float(statistic),
        "p_value": float(p_value),
        "drifted": _flag(value, p_value, settings),
    }


def _categories(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("")


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One row per feature of the contract, in its order."""
    if current.empty or reference.empty:
        raise ValueError(
            f"drift needs rows on both sides, got {len(reference)} reference and {len(current)} "
            f"current rows: check data.split and the --current file"
        )
    rows = [categorical_drift(name, reference[name], current[name], settings) for name in settings.features.categorical]
    rows += [numeric_drift(name, reference[name], current[name], settings) for name in settings.features.numeric]
    return pd.DataFrame(rows, columns=COLUMNS)


def prediction_drift(
    reference_probability: np.ndarray, current_probability: np.ndarray, settings: Settings
) -> pd.DataFrame:
    """PSI and KS of the predicted probabilities, as one row named <target>_probability."""
    row = numeric_drift(
        f"{settings.data.target}_probability",
        pd.Series(reference_probability, dtype="float64"),
        pd.Series(current_probability, dtype="float64"),
        settings,
        kind=PREDICTION,
    )
    return pd.DataFrame([row], columns=COLUMNS)


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def drift_summary(table: pd.DataFrame, settings: Settings, reference_rows: int, current_rows: int) -> dict[str, Any]:
    """What drift.json holds: the rule, every feature, the predictions and the count flagged."""
    records = {row["feature"]: {key: _json_number(row[key]) for key in COLUMNS[1:]} for row in table.to_dict("records")}
    for record in records.values():
        record["drifted"] = bool(record["drifted"])
    features = {name: record for name, record in records.items() if record["kind"] != PREDICTION}
    prediction = next(
        (record | {"name": name} for name, record in records.items() if record["kind"] == PREDICTION), None
    )
    drifted = [name for name, record in features.items() if record["drifted"]]
    return {
        "rule": f"PSI >= {settings.drift.psi_threshold} and p-value < {settings.drift.p_value}",
        "psi_bins": settings.drift.psi_bins,
        "reference_rows": reference_rows,
        "current_rows": current_rows,
        "features": features,
        "prediction": prediction,
        "summary": {
            "features": len(features),
            "drifted_features": len(drifted),
            "drifted": drifted,
            "prediction_drifted": bool(prediction and prediction["drifted"]),
        },
    }


def plot_psi(table: pd.DataFrame, settings: Settings, path: Path) -> Path:
    ordered = table.sort_values("psi")
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.5))
    axis.barh(ordered["feature"], ordered["psi"], color=np.where(ordered["drifted"], "#c0392b", "#7f8c8d"))
    axis.axvline(
        settings.drift.psi_threshold, color="#333", linestyle="--", label=f"threshold {settings.drift.psi_threshold:g}"
    )
    axis.set_xlabel("population stability index (red: drift flagged)")
    axis.legend(loc="lower right")
    return save_figure(figure, path)


def plot_drifted_distributions(
    reference: pd.DataFrame, current: pd.DataFrame, table: pd.DataFrame, settings: Settings, path: Path
) -> Path:
    """Reference against current for the features with the largest PSI."""
    shown = table[table["kind"] != PREDICTION].nlargest(SHOWN_FEATURES, "psi")
    figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2), squeeze=False)
    for axis, row in zip(axes[0], shown.itertuples()):
        if row.kind == CATEGORICAL:
            shares = pd.concat(
                [
                    _categories(reference[row.feature]).value_counts(normalize=True).rename("reference"),
                    _categories(current[row.feature]).value_counts(normalize=True).rename("current"),
                ],
                axis=1,
            ).fillna(0)
            shares = shares.loc[shares.max(axis=1).nlargest(15).index].rename(index={"": "(missing)"})
            positions = np.arange(len(shares))
            axis.bar(positions - 0.2, shares["reference"], width=0.4, label="reference")
            axis.bar(positions + 0.2, shares["current"], width=0.4, label="current")
            axis.set_xticks(positions, shares.index, rotation=60, fontsize=7)
            axis.set_ylabel("share of rows")
        else:
            both = pd.concat([reference[row.feature], current[row.feature]]).astype("float64").dropna()
            low, high = both.quantile([0.005, 0.995]) if len(both) else (0.0, 0.0)
            edges = np.linspace(low, high, 31) if high > low else 30  # a few extremes would flatten the rest
            for label, frame in (("reference", reference), ("current", current)):
                values = frame[row.feature].astype("float64").dropna()
                if len(values):  # a sensor that stopped reporting has nothing to draw
                    axis.hist(values, bins=edges, density=True, alpha=0.5, label=label)
            axis.set_ylabel("density")
        axis.set_title(f"{row.feature}: PSI {row.psi:.2f}", fontsize=10)
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def plot_predictions(
    reference_probability: np.ndarray, current_probability: np.ndarray, settings: Settings, path: Path
) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.2))
    edges = np.linspace(0, 1, 41).tolist()
    axis.hist(reference_probability, bins=edges, density=True, alpha=0.5, label="reference")
    axis.hist(current_probability, bins=edges, density=True, alpha=0.5, label="current")
    axis.set_xlabel(f"predicted {settings.data.target} probability")
    axis.set_ylabel("density")
    axis.legend()
    return save_figure(figure, path)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: Settings,
    folder: Path,
    reference_probability: np.ndarray | None = None,
    current_probability: np.ndarray | None = None,
) -> DriftReport:
    """Compare, then write drift.json and the figures into `folder`. Prediction drift is
    measured when both probability arrays are given."""
    table = feature_drift(reference, current, settings)
    if reference_probability is not None and current_probability is not None:
        table = pd.concat(
            [table, prediction_drift(reference_probability, current_probability, settings)], ignore_index=True
        )
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / JSON_NAME
    json_path.write_text(json.dumps(drift_summary(table, settings, len(reference), len(current)), indent=2) + "\n")
    figures = [
        ("PSI per feature; the dashed line is the threshold", plot_psi(table, settings, folder / "psi.png")),
        (
            "Reference and current distributions of the most drifted features",
            plot_drifted_distributions(reference, current, table, settings, folder / "distributions.png"),
        ),
    ]
    if reference_probability is not None and current_probability is not None:
        figures.append(
            (
                "Predicted probabilities, reference and current",
                plot_predictions(reference_probability, current_probability, settings, folder / "predictions.png"),
            )
        )
    flagged = table.loc[table["drifted"], "feature"].tolist()
    log.info(
        "drift: %d of %d checks flagged%s", len(flagged), len(table), f" ({', '.join(flagged)})" if flagged else ""
    )
    return DriftReport(table, json_path, figures)


def drift_section(report: DriftReport, settings: Settings) -> Section:
    """The report's drift section: the table and the figures."""
    features = report.table[report.table["kind"] != PREDICTION]
    prediction = report.table[report.table["kind"] == PREDICTION]
    predictions = "not scored" if prediction.empty else "drift" if bool(prediction["drifted"].iloc[0]) else "are stable"
    intro = (
        f"{int(features['drifted'].sum())} of {len(features)} features drift against the training data "
        f"(flagged when PSI >= {settings.drift.psi_threshold:g} and the KS or chi-square p-value < "
        f"{settings.drift.p_value:g}); the predictions {predictions}."
    )
    return Section(
        title="Drift",
        intro=intro,
        tables=[("PSI and test per feature and for the predicted probabilities", report.table)],
        figures=report.figures,
    )


def current_batch(path: Path, settings: Settings) -> pd.DataFrame:
    """A file of request fields, cleaned as the training data was: missing columns become missing
    values, out-of-range numbers are treated as quality.out_of_range says."""
    frame = read_table(path)
    unknown = [name for name in frame.columns if name not in settings.features.names]
    if unknown:
        log.info("%s: ignoring columns that are not features: %s", path, ", ".join(map(str, unknown)))
    return clean(frame.reindex(columns=settings.features.names), settings)


def drift_job(settings: Settings, current_path: Path | None = None) -> DriftReport:
    """The train split against the test split (or a given file), with prediction drift when
    the exported model exists."""
    table = load_table(settings)
    reference = split_rows(table, "train")
    current = split_rows(table, "test") if current_path is None else current_batch(current_path, settings)
    probabilities: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    if (settings.paths.export_dir / TORCHSCRIPT).exists():
        model, schema = load_served_model(settings.paths.export_dir)  # the very model TorchServe serves
        probabilities = (
            predict_probability(model, schema, reference).astype("float64"),
            predict_probability(model, schema, current).astype("float64"),
        )
    else:
        log.info("no %s in %s: prediction drift skipped (train first)", TORCHSCRIPT, settings.paths.export_dir)
    return detect_drift(reference, current, settings, settings.paths.report_dir / "drift", *probabilities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument(
        "--current", type=Path, default=None, help="CSV or Parquet of request fields (default: the test split)"
    )
    args = parser.parse_args()
    configure_logging()
    print(drift_job(load_settings(args.config), args.current).json_path)


if __name__ == "__main__":
    main()
