"""Data quality: a declared schema built from the feature contract (pandera), metrics per
batch and column kept over time in SQLite, cleaning by the configured thresholds, and a
stop with the reason when a batch is out of bounds."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pandera.pandas as pa

from model.config import Settings
from model.report import Section, save_figure
from model.sources import TARGET, TIME

log = logging.getLogger(__name__)

BATCH = "batch"


class DataQualityError(ValueError):
    """A batch broke a quality limit; the message names batch, column, value and limit."""


def table_schema(settings: Settings) -> pa.DataFrameSchema:
    """What a cleaned table must look like: the feature contract as a pandera schema."""
    columns: dict[str, pa.Column] = {TIME: pa.Column(pa.DateTime, nullable=False, coerce=True)}
    for name, spec in settings.features.categorical.items():
        checks = [pa.Check.str_length(min_value=1)] if spec.required else []
        columns[name] = pa.Column(str, checks=checks, nullable=False, coerce=True)
    for name, spec in settings.features.numeric.items():
        checks = [pa.Check.in_range(spec.min, spec.max)]
        if spec.integer:
            checks.append(pa.Check(lambda values: values.dropna() % 1 == 0, element_wise=False, name="integer"))
        columns[name] = pa.Column(float, checks=checks, nullable=not spec.required, coerce=True)
    columns[TARGET] = pa.Column("int8", pa.Check.isin([0, 1]), nullable=False, coerce=True)
    return pa.DataFrameSchema(columns, strict="filter", ordered=False)


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
            values = part[name].astype("string")
            present = values[values.notna() & (values != "")]
            rows.append({BATCH: batch, "column": name, "kind": "categorical", "rows": len(part),
                         "missing_share": 1 - len(present) / len(part), "out_of_range_share": 0.0,
                         "mean": None, "cardinality": int(present.nunique()),
                         "new_categories": int(len(set(present) - known[name])), "duplicate_share": duplicates})
        for name, spec in settings.features.numeric.items():
            values = pd.to_numeric(part[name], errors="coerce").astype("float64")
            present = values.dropna()
            outside = ((present < spec.min) | (present > spec.max)).sum()
            rows.append({BATCH: batch, "column": name, "kind": "numeric", "rows": len(part),
                         "missing_share": float(values.isna().mean()),
                         "out_of_range_share": float(outside / len(part)),
                         "mean": float(present.mean()) if len(present) else None, "cardinality": None,
                         "new_categories": None, "duplicate_share": duplicates})
    return pd.DataFrame(rows)


def problems(metrics: pd.DataFrame, settings: Settings) -> list[str]:
    """Every limit a batch breaks, as a sentence that names the fix."""
    limits = settings.quality
    own = {name: spec.max_missing for name, spec in
           {**settings.features.categorical, **settings.features.numeric}.items() if spec.max_missing is not None}
    found = []
    for row in metrics.itertuples():
        max_missing = own.get(row.column, limits.max_missing)
        if row.missing_share > max_missing:
            found.append(f"batch {row.batch}: {row.column} is {row.missing_share:.1%} missing, over the limit of "
                         f"{max_missing:.0%} (quality.max_missing, or max_missing on the feature)")
        if row.out_of_range_share > limits.max_out_of_range:
            found.append(f"batch {row.batch}: {row.out_of_range_share:.1%} of {row.column} is outside its bounds, "
                         f"over the limit of {limits.max_out_of_range:.0%} (quality.max_out_of_range)")
    per_batch = metrics.drop_duplicates(BATCH)
    for row in per_batch.itertuples():
        if row.rows < limits.min_rows:
            found.append(f"batch {row.batch}: {row.rows} rows, fewer than quality.min_rows = {limits.min_rows}")
        if row.duplicate_share > limits.max_duplicates:
            found.append(f"batch {row.batch}: {row.duplicate_share:.1%} duplicated rows, over the limit of "
                         f"{limits.max_duplicates:.0%} (quality.max_duplicates)")
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
            log.info("%s: %d values outside [%g, %g]: %s", name, int(outside.sum()), spec.min, spec.max,
                     {"missing": "set missing", "clip": "clipped", "drop": "rows dropped"}[action])
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


def store(metrics: pd.DataFrame, database: Path, source: str, passed: bool) -> None:
    """Append the metrics to the quality history (table `column_quality`)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    stamped = metrics.assign(source=source, passed=passed, measured_at=datetime.now(timezone.utc).isoformat())
    with closing(sqlite3.connect(database)) as connection, connection:
        stamped.to_sql("column_quality", connection, if_exists="append", index=False)


def history(database: Path) -> pd.DataFrame:
    with closing(sqlite3.connect(database)) as connection:
        return pd.read_sql_query("SELECT * FROM column_quality ORDER BY measured_at, batch, column", connection)


def assess(table: pd.DataFrame, settings: Settings, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Measure, record, stop on a broken limit, clean, and check the declared schema."""
    metrics = measure(table, settings, reference)
    found = problems(metrics, settings)
    store(metrics, settings.paths.quality_db, settings.data.source, passed=not found)
    if found:
        raise DataQualityError("data quality check failed:\n  " + "\n  ".join(found))
    cleaned = clean(table, settings)
    try:
        return table_schema(settings).validate(cleaned, lazy=True)
    except pa.errors.SchemaErrors as error:
        raise DataQualityError(f"the cleaned table breaks the declared schema:\n{error.failure_cases}") from None


def latest_run(database: Path, source: str) -> pd.DataFrame:
    """The most recent measurement of `source` from the history."""
    runs = history(database)
    runs = runs[runs["source"] == source]
    return runs[runs["measured_at"] == runs["measured_at"].max()]


def quality_section(settings: Settings, folder: Path) -> Section:
    metrics = latest_run(settings.paths.quality_db, settings.data.source)
    per_column = (metrics.groupby("column", sort=False)
                  .agg(kind=("kind", "first"), worst_missing=("missing_share", "max"),
                       worst_out_of_range=("out_of_range_share", "max"), cardinality=("cardinality", "max"),
                       most_new_categories=("new_categories", "max"))
                  .reset_index())
    per_batch = metrics.drop_duplicates(BATCH)[[BATCH, "rows", "duplicate_share"]]

    shown = per_column.loc[per_column["worst_missing"] > 0, "column"].tolist()
    figure, (missing, other) = plt.subplots(1, 2, figsize=(13, 3.8))
    colors = plt.cm.tab20.colors  # one distinct color per column: the default cycle repeats after ten
    for index, name in enumerate(shown):
        series = metrics[metrics["column"] == name]
        missing.plot(series[BATCH], series["missing_share"], marker=".", label=name, color=colors[index % 20])
    missing.set_title("missing share per batch", fontsize=10)
    missing.tick_params(axis="x", rotation=90, labelsize=7)
    missing.legend(fontsize=7, ncol=2)
    new = metrics[metrics["kind"] == "categorical"].pivot_table(index=BATCH, columns="column",
                                                                values="new_categories")
    new.plot(ax=other, marker=".")
    other.set_title("categories unseen in training, per batch", fontsize=10)
    other.tick_params(axis="x", rotation=90, labelsize=7)
    return Section(
        title="Data quality",
        intro=(f"Measured per {settings.data.batch} batch before cleaning and kept in {settings.paths.quality_db.name} "
               f"(table column_quality) with every run. Limits: missing share {settings.quality.max_missing:.0%} "
               f"(or the feature's own), out of bounds {settings.quality.max_out_of_range:.0%} (then "
               f"'{settings.quality.out_of_range}'), duplicates {settings.quality.max_duplicates:.0%}."),
        tables=[("Worst batch per column", per_column), ("Rows and duplicated share per batch", per_batch)],
        figures=[("Missing values and new categories over time", save_figure(figure, folder / "quality.png"))],
    )
