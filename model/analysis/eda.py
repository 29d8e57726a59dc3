"""Automatic exploratory analysis of the prepared table: distributions, missingness,
target rate over time and by the main categories, correlations — as report figures."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from model.analysis.layout import Section, save_figure
from model.config import Settings
from model.data.sources import TARGET, TIME
from model.data.split import SPLIT, SPLITS, split_rows


def column_summary(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        part = split_rows(table, split)
        rows.append(
            {
                "split": split,
                "rows": len(part),
                "from": part[TIME].min().date(),
                "to": part[TIME].max().date(),
                "positive share": part[TARGET].mean(),
            }
        )
    return pd.DataFrame(rows)


def missingness(table: pd.DataFrame, settings: Settings) -> pd.Series:
    shares = {name: (table[name] == "").mean() for name in settings.features.categorical}
    shares |= {name: table[name].isna().mean() for name in settings.features.numeric}
    return pd.Series(shares).sort_values(ascending=False)


def plot_numeric_distributions(table: pd.DataFrame, settings: Settings, path: Path) -> Path:
    names = list(settings.features.numeric)
    columns = 4
    figure, axes = plt.subplots(
        math.ceil(len(names) / columns), columns, figsize=(14, 2.6 * math.ceil(len(names) / columns)), squeeze=False
    )
    for axis, name in zip(axes.flat, names):
        values = table[name].dropna()
        for split, color in zip(SPLITS, ("#4c72b0", "#dd8452", "#55a868")):
            part = values[table.loc[values.index, SPLIT] == split]
            axis.hist(part, bins=40, density=True, histtype="step", color=color, label=split)
        axis.set_title(name, fontsize=10)
        axis.tick_params(labelsize=8)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    return save_figure(figure, path)


def plot_categories(table: pd.DataFrame, settings: Settings, path: Path, top: int = 12) -> Path:
    names = list(settings.features.categorical)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    for axis, name in zip(axes.flat, names):
        counts = table[name].replace("", "(missing)").value_counts().head(top)
        axis.barh(counts.index[::-1], counts.to_numpy()[::-1], color="#4c72b0")
        axis.set_title(f"{name} (top {top})", fontsize=10)
        axis.tick_params(labelsize=7)
    return save_figure(figure, path)


def plot_missingness(table: pd.DataFrame, settings: Settings, path: Path) -> Path:
    by_month = pd.DataFrame(
        {period: missingness(part, settings) for period, part in table.groupby(table[TIME].dt.to_period("M"))}
    ).T
    shares = missingness(table, settings)
    shown = shares[shares > 0].index.tolist() or shares.index[:1].tolist()
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 2]})
    left.barh(shares.index[::-1], shares.to_numpy()[::-1], color="#c44e52")
    left.set_xlabel("share missing (all rows)")
    image = right.imshow(by_month[shown].T.to_numpy(), aspect="auto", cmap="Reds", vmin=0, vmax=1)
    right.set_yticks(range(len(shown)), shown, fontsize=8)
    right.set_xticks(range(len(by_month)), [str(p) for p in by_month.index], rotation=90, fontsize=7)
    right.set_title("share missing per month", fontsize=10)
    figure.colorbar(image, ax=right)
    return save_figure(figure, path)


def plot_target_over_time(table: pd.DataFrame, settings: Settings, path: Path) -> Path:
    weekly = table.set_index(TIME)[TARGET].resample("W").agg(["mean", "size"])
    figure, axis = plt.subplots(figsize=(12, 3.4))
    axis.plot(weekly.index, weekly["mean"], color="#4c72b0")
    for boundary in (settings.data.split.valid_start, settings.data.split.test_start):
        axis.axvline(mdates.date2num(pd.Timestamp(boundary)), color="#999", linestyle="--")
    axis.set_ylabel(f"{settings.data.target} share (weekly)")
    axis.set_title("target rate over time; dashed: validation and test start", fontsize=10)
    return save_figure(figure, path)


def plot_target_by_category(table: pd.DataFrame, settings: Settings, path: Path, top: int = 15) -> Path:
    names = list(settings.features.categorical)[:3]
    extra = [name for name in ("hour", "day_of_week", "month") if name in settings.features.numeric]
    panels = names + extra
    rows = 1 if len(panels) <= 3 else 2
    per_row = math.ceil(len(panels) / rows)
    figure, axes = plt.subplots(rows, per_row, figsize=(4.2 * per_row, 3.6 * rows), squeeze=False)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    for axis, name in zip(axes.flat, panels):
        grouped = table.groupby(name)[TARGET].agg(["mean", "size"])
        if name in names:
            grouped = grouped.sort_values("size", ascending=False).head(top).sort_values("mean")
            axis.barh([str(i) for i in grouped.index], grouped["mean"], color="#55a868")
        else:
            axis.bar(grouped.index.astype(int), grouped["mean"], color="#55a868")
        axis.set_title(f"{settings.data.target} share by {name}", fontsize=10)
        axis.tick_params(labelsize=7)
    return save_figure(figure, path)


def plot_correlations(table: pd.DataFrame, settings: Settings, path: Path) -> Path:
    names = [*settings.features.numeric, TARGET]
    matrix = table[names].astype("float64").corr(method="spearman")
    figure, axis = plt.subplots(figsize=(8.5, 7))
    image = axis.imshow(matrix.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    for (i, j), value in np.ndenumerate(matrix.to_numpy()):
        if abs(value) >= 0.3 and i != j:
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6)
    axis.set_title("Spearman correlations (numbers and target)", fontsize=10)
    figure.colorbar(image, ax=axis)
    return save_figure(figure, path)


def eda_section(table: pd.DataFrame, settings: Settings, folder: Path) -> Section:
    shares = missingness(table, settings)
    return Section(
        title="Data and exploratory analysis",
        intro=(
            f"{len(table):,} rows from the {settings.data.source} source, split by time. Numbers are drawn per "
            "split to show seasonal shift; missing categories appear as '(missing)'."
        ),
        tables=[
            ("Rows per split", column_summary(table)),
            ("Missing share per feature", shares.rename("missing share").rename_axis("feature").reset_index()),
        ],
        figures=[
            (
                "Distributions of the numeric features per split",
                plot_numeric_distributions(table, settings, folder / "distributions.png"),
            ),
            ("Most frequent categories", plot_categories(table, settings, folder / "categories.png")),
            ("Missing values, overall and per month", plot_missingness(table, settings, folder / "missing.png")),
            ("Target rate over time", plot_target_over_time(table, settings, folder / "target_over_time.png")),
            ("Target rate by key categories", plot_target_by_category(table, settings, folder / "target_by.png")),
            ("Correlations", plot_correlations(table, settings, folder / "correlations.png")),
        ],
    )
