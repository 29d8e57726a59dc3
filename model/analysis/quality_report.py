"""The report's data-quality section: the latest quality run per column and batch, plotted over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from model.analysis.layout import Section, save_figure
from model.config import Settings
from model.data.quality import BATCH


def quality_section(settings: Settings, folder: Path) -> Section:
    metrics = pd.read_parquet(settings.paths.quality)  # the last assessment (model/data/quality.py)
    per_column = (
        metrics.groupby("column", sort=False)
        .agg(
            kind=("kind", "first"),
            worst_missing=("missing_share", "max"),
            worst_out_of_range=("out_of_range_share", "max"),
            cardinality=("cardinality", "max"),
            most_new_categories=("new_categories", "max"),
        )
        .reset_index()
    )
    per_batch = metrics.drop_duplicates(BATCH)[[BATCH, "rows", "duplicate_share"]]

    shown = per_column.loc[per_column["worst_missing"] > 0, "column"].tolist()
    figure, (missing, other) = plt.subplots(1, 2, figsize=(13, 3.8))
    colors = plt.color_sequences["tab20"]  # one distinct color per column: the default cycle repeats after ten
    for index, name in enumerate(shown):
        series = metrics[metrics["column"] == name]
        missing.plot(series[BATCH], series["missing_share"], marker=".", label=name, color=colors[index % 20])
    missing.set_title("missing share per batch", fontsize=10)
    missing.tick_params(axis="x", rotation=90, labelsize=7)
    missing.legend(fontsize=7, ncol=2)
    new = metrics[metrics["kind"] == "categorical"].pivot_table(index=BATCH, columns="column", values="new_categories")
    new.plot(ax=other, marker=".")
    other.set_title("categories unseen in training, per batch", fontsize=10)
    other.tick_params(axis="x", rotation=90, labelsize=7)
    return Section(
        title="Data quality",
        intro=(
            f"Measured per {settings.data.batch} batch before cleaning and kept in {settings.paths.quality_db.name} "
            f"(table column_quality) with every run. Limits: missing share {settings.quality.max_missing:.0%} "
            f"(or the feature's own), out of bounds {settings.quality.max_out_of_range:.0%} (then "
            f"'{settings.quality.out_of_range}'), duplicates {settings.quality.max_duplicates:.0%}."
        ),
        tables=[("Worst batch per column", per_column), ("Rows and duplicated share per batch", per_batch)],
        figures=[("Missing values and new categories over time", save_figure(figure, folder / "quality.png"))],
    )
