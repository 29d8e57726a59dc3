"""Data quality: metrics per batch and column, the limits they must keep (each broken one a
sentence that names the fix), cleaning by the configured rules, and the declared schema
checked on what is left. Every run's metrics go to the quality history."""

from __future__ import annotations

import logging

import pandas as pd
import pandera.pandas as pa

from model.config import CategoricalFeature, NumericFeature, Settings
from model.data.quality_history import store
from model.data.schema import table_schema
from model.data.sources import TIME

log = logging.getLogger(__name__)

BATCH = "batch"


class DataQualityError(ValueError):
    """A batch broke a quality limit; the message names batch, column, value and limit."""


def batches(table: pd.DataFrame, settings: Settings) -> pd.Series:
    return table[TIME].dt.to_period(settings.data.batch).astype(str).rename(BATCH)


def measure(table: pd.DataFrame, settings: Settings, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per batch and column: rows, missing share, out-of-range share, mean,
    cardinality, categories unseen in `reference` (default: the training part of `table`),
    and the batch's share of duplicated rows."""
    if reference is None:
        reference = table[table[TIME] < settings.data.split.valid_start]
    known = {name: set(reference[name].dropna().astype(str)) for name in settings.features.categorical}
    keys = batches(table, settings)
    rows = []
    for batch, part in table.groupby(keys, sort=True):
        duplicates = float(part.duplicated().mean())
        for name in settings.features.categorical:
            values: pd.Series = part[name].astype("string")
            present = values[values.notna() & (values != "")]
            rows.append(
                {
                    BATCH: batch,
                    "column": name,
                    "kind": "categorical",
                    "rows": len(part),
                    "missing_share": 1 - len(present) / len(part),
                    "out_of_range_share": 0.0,
                    "mean": None,
                    "cardinality": int(present.nunique()),
                    "new_categories": int(len(set(present) - known[name])),
                    "duplicate_share": duplicates,
                }
            )
        for name, spec in settings.features.numeric.items():
            values = pd.to_numeric(part[name], errors="coerce").astype("float64")
            present = values.dropna()
            outside = ((present < spec.min) | (present > spec.max)).sum()
            rows.append(
                {
                    BATCH: batch,
                    "column": name,
                    "kind": "numeric",
                    "rows": len(part),
                    "missing_share": float(values.isna().mean()),
                    "out_of_range_share": float(outside / len(part)),
                    "mean": float(present.mean()) if len(present) else None,
                    "cardinality": None,
                    "new_categories": None,
                    "duplicate_share": duplicates,
                }
            )
    return pd.DataFrame(rows)


def problems(metrics: pd.DataFrame, settings: Settings) -> list[str]:
    """Every limit a batch breaks, as a sentence that names the fix."""
    limits = settings.quality
    features: dict[str, CategoricalFeature | NumericFeature] = {
        **settings.features.categorical,
        **settings.features.numeric,
    }
    own = {name: spec.max_missing for name, spec in features.items() if spec.max_missing is not None}
    found = []
    for row in metrics.to_dict("records"):
        max_missing = own.get(row["column"], limits.max_missing)
        if row["missing_share"] > max_missing:
            found.append(
                f"batch {row['batch']}: {row['column']} is {row['missing_share']:.1%} missing, over the "
                f"limit of {max_missing:.0%} (quality.max_missing, or max_missing on the feature)"
            )
        if row["out_of_range_share"] > limits.max_out_of_range:
            found.append(
                f"batch {row['batch']}: {row['out_of_range_share']:.1%} of {row['column']} is outside its "
                f"bounds, over the limit of {limits.max_out_of_range:.0%} (quality.max_out_of_range)"
            )
    per_batch = metrics.drop_duplicates(BATCH)
    for row in per_batch.to_dict("records"):
        if row["rows"] < limits.min_rows:
            found.append(f"batch {row['batch']}: {row['rows']} rows, fewer than quality.min_rows = {limits.min_rows}")
        if row["duplicate_share"] > limits.max_duplicates:
            found.append(
                f"batch {row['batch']}: {row['duplicate_share']:.1%} duplicated rows, over the limit of "
                f"{limits.max_duplicates:.0%} (quality.max_duplicates)"
            )
    return found


def clean(table: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Drop duplicated rows (if configured); treat out-of-range numbers as configured;
    missing categories become ""."""
    if settings.quality.drop_duplicates:
        before = len(table)
        table = table.drop_duplicates().reset_index(drop=True)
        if len(table) < before:
            log.info("dropped %d duplicated rows", before - len(table))
    action = settings.quality.out_of_range
    drop = pd.Series(False, index=table.index)
    for name, spec in settings.features.numeric.items():
        values = pd.to_numeric(table[name], errors="coerce").astype("float64")
        outside = (values < spec.min) | (values > spec.max)
        if outside.any():
            log.info(
                "%s: %d values outside [%g, %g]: %s",
                name,
                int(outside.sum()),
                spec.min,
                spec.max,
                {"missing": "set missing", "clip": "clipped", "drop": "rows dropped"}[action],
            )
        if action == "clip":
            values = values.clip(spec.min, spec.max)
        elif action == "missing":
            values = values.mask(outside)
        drop |= outside
        table[name] = values
    if action == "drop" and drop.any():
        table = table.loc[~drop].reset_index(drop=True)
    for name in settings.features.categorical:
        table[name] = table[name].astype("string").fillna("").astype(str)
    return table


def assess(table: pd.DataFrame, settings: Settings, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Measure, record, stop on a broken limit, clean, and check the declared schema. The
    metrics go to paths.quality (this assessment's, versioned with the data: the same table
    gives the same file) and are appended to the history in paths.quality_db (a log of every
    run, with its time)."""
    metrics = measure(table, settings, reference)
    found = problems(metrics, settings)
    settings.paths.quality.parent.mkdir(parents=True, exist_ok=True)
    metrics.assign(source=settings.data.source, passed=not found).to_parquet(settings.paths.quality, index=False)
    store(metrics, settings.paths.quality_db, settings.data.source, passed=not found)
    if found:
        raise DataQualityError("data quality check failed:\n  " + "\n  ".join(found))
    cleaned = clean(table, settings)
    try:
        return table_schema(settings).validate(cleaned, lazy=True)
    except pa.errors.SchemaErrors as error:
        raise DataQualityError(f"the cleaned table breaks the declared schema:\n{error.failure_cases}") from None
