"""The replay's summary (python run.py --mode summary): one self-contained HTML page with data
quality and drift per batch over time, every model version with its status and metrics, the
production model's ROC AUC on each batch as it arrived, every decision, and the time and
memory of every run. Laid out with model/analysis/report.py; written to <stream.dir>/report/summary.html.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from model.analysis.drift import PREDICTION
from model.analysis.layout import Section, render, save_figure
from model.base.sqlite_store import now
from model.config import Settings
from model.lifecycle.batch_store import Store
from model.lifecycle.registry import Registry, replay_registry
from model.lifecycle.runs import runs

log = logging.getLogger(__name__)

SUMMARY = "summary.html"


def _ticks(axis: plt.Axes, labels: list[str]) -> None:
    step = max(1, len(labels) // 26)  # a readable number of dates
    axis.set_xticks(range(0, len(labels), step), labels[::step], rotation=90, fontsize=7)


def batches_section(settings: Settings, store: Store, folder: Path) -> Section:
    batches = store.batches()
    auc = batches["production_metrics"].map(lambda m: None if m is None else m["roc_auc"])
    table = pd.DataFrame(
        {
            "batch": batches["batch"],
            "rows": batches["rows"],
            "positive share": batches["positive_share"],
            "quality": np.where(
                batches["quality_passed"], "passed", "quarantined: " + batches["problems"].map(lambda p: "; ".join(p))
            ),
            "drifted features": batches["drifted"].map(lambda d: "" if d is None else ", ".join(d)),
            "predictions drift": batches["prediction_drifted"].map(lambda d: "" if pd.isna(d) else bool(d)),
            "production version": batches["reference_version"].map(lambda v: "" if pd.isna(v) else int(v)),
            "production ROC AUC": auc,
        }
    )
    labels = batches["batch"].tolist()
    figure, (rows, share) = plt.subplots(1, 2, figsize=(13, 3.6))
    colors = np.where(batches["quality_passed"], "#4c72b0", "#c0392b")
    rows.bar(range(len(batches)), batches["rows"], color=colors)
    rows.set_title("rows per batch (red: quarantined by the quality checks)", fontsize=10)
    share.plot(range(len(batches)), batches["positive_share"], marker=".")
    share.set_title(f"{settings.data.target} share per batch", fontsize=10)
    for axis in (rows, share):
        _ticks(axis, labels)
    quarantined = int((~batches["quality_passed"]).sum())
    return Section(
        title="Batches",
        intro=(
            f"{len(batches)} batches of one period '{settings.stream.batch}' each, {labels[0]} to {labels[-1]}; "
            f"{quarantined} broke a quality limit and were quarantined (stored, never trained or evaluated on). "
            "Drift and the production model's metrics are measured against the version in production when "
            "the batch arrived (none during the bootstrap)."
        ),
        tables=[("Every batch as it arrived", table)],
        figures=[("Rows and target share per batch", save_figure(figure, folder / "batches.png"))],
    )


def quality_over_time_section(settings: Settings, store: Store, folder: Path) -> Section:
    quality = store.table("batch_quality")
    missing = quality.pivot_table(index="batch", columns="column", values="missing_share", sort=True)
    missing = missing.loc[:, missing.max() > 0]
    new = quality[quality["kind"] == "categorical"].pivot_table(
        index="batch", columns="column", values="new_categories", sort=True
    )
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.8))
    colors = plt.color_sequences["tab20"]
    for index, name in enumerate(missing.columns):
        left.plot(range(len(missing)), missing[name], marker=".", label=name, color=colors[index % 20])
    left.set_title("missing share per batch", fontsize=10)
    left.legend(fontsize=7, ncol=2)
    for name in new.columns:
        right.plot(range(len(new)), new[name], marker=".", label=name)
    right.set_title("categories unseen in production's training rows, per batch", fontsize=10)
    right.legend(fontsize=7)
    _ticks(left, missing.index.tolist())
    _ticks(right, new.index.tolist())
    worst = (
        quality.groupby("column", sort=False)
        .agg(
            worst_missing=("missing_share", "max"),
            worst_out_of_range=("out_of_range_share", "max"),
            most_new_categories=("new_categories", "max"),
        )
        .reset_index()
    )
    return Section(
        title="Data quality over time",
        intro=(
            "model/data/quality.py's measurements of each raw batch before cleaning, with the limits of params.yaml "
            f"(quality): missing share {settings.quality.max_missing:.0%} or the feature's own, out of bounds "
            f"{settings.quality.max_out_of_range:.0%}, at least {settings.quality.min_rows} rows."
        ),
        tables=[("Worst batch per column", worst)],
        figures=[("Missing values and new categories per batch", save_figure(figure, folder / "quality.png"))],
    )


def drift_over_time_section(settings: Settings, store: Store, folder: Path) -> Section:
    drift = store.table("batch_drift")
    if drift.empty:
        return Section(title="Drift over time", intro="No batch has arrived after the bootstrap yet.")
    psi = drift.pivot_table(index="feature", columns="batch", values="psi", sort=False)
    flagged = drift.pivot_table(index="feature", columns="batch", values="drifted", sort=False).astype(bool)
    figure, (heat, count) = plt.subplots(
        2, 1, figsize=(13, 0.28 * len(psi) + 5.5), gridspec_kw={"height_ratios": [len(psi), 6]}
    )
    # Saturates at twice the threshold: one huge PSI would wash out every other cell.
    image = heat.imshow(
        psi.to_numpy(dtype=float), aspect="auto", cmap="Reds", vmin=0, vmax=2 * settings.drift.psi_threshold
    )
    rows, columns = np.nonzero(flagged.to_numpy())
    heat.scatter(columns, rows, marker="x", color="black", s=12, label="drift flagged")
    heat.set_yticks(range(len(psi)), psi.index, fontsize=7)
    _ticks(heat, psi.columns.tolist())
    heat.legend(loc="upper left", fontsize=7)
    figure.colorbar(image, ax=heat, label="PSI", pad=0.01)
    ignored = set(settings.stream.retrain.ignore_features)
    features = drift[(drift["kind"] != PREDICTION) & ~drift["feature"].isin(ignored)]
    counted = features.groupby("batch", sort=True)["drifted"].sum()
    count.plot(range(len(counted)), counted.to_numpy(), marker=".", label="drifted features counted")
    count.axhline(
        settings.stream.retrain.drifted_features, color="#333", linestyle="--", label="retrain.drifted_features"
    )
    count.legend(fontsize=7)
    _ticks(count, counted.index.tolist())
    return Section(
        title="Drift over time",
        intro=(
            "Each batch against the training rows of the production version of its day "
            f"(model/analysis/drift.py: PSI "
            f"with KS or chi-square, flagged when PSI >= {settings.drift.psi_threshold:g} and p < "
            f"{settings.drift.p_value:g}), for every feature and the predicted probabilities. The count that "
            f"can trigger a retraining leaves out {', '.join(sorted(ignored)) or 'nothing'}."
        ),
        figures=[
            (
                "PSI per feature and batch (x: flagged), and the drifted features counted per batch",
                save_figure(figure, folder / "drift.png"),
            )
        ],
    )


def versions_table(registry: Registry) -> pd.DataFrame:
    rows = []
    for version in registry.versions():
        stream, metrics = version.params.get("stream", {}), version.metrics
        contenders = metrics.get("contenders", {})
        rows.append(
            {
                "version": version.version,
                "status": version.status,
                "created": version.created,
                "trained": metrics.get("trained", ""),
                "training batches": f"{stream['train_batches'][0]}..{stream['valid_batches'][-1]}" if stream else "",
                "held-out batch": stream.get("holdout_batch", ""),
                "valid ROC AUC": metrics.get("valid", {}).get("roc_auc"),
                "held-out ROC AUC": metrics.get("test", {}).get("roc_auc"),
                "warm start": contenders.get("warm_start", {}).get("test", {}).get("roc_auc"),
                "scratch": contenders.get("scratch", {}).get("test", {}).get("roc_auc"),
                "production then": (metrics.get("production") or {}).get("test", {}).get("roc_auc"),
                "model id": version.model_id,
                "data hash": version.data_hash[:8],
                "note": version.note,
            }
        )
    return pd.DataFrame(rows)


def models_section(settings: Settings, store: Store, registry: Registry, folder: Path) -> Section:
    versions = versions_table(registry)
    events = pd.DataFrame(
        [
            {"version": e.version, "at": e.at, "event": e.event, "detail": json.dumps(e.detail)[:160]}
            for e in registry.events()
        ]
    )
    batches = store.batches()
    labels = batches["batch"].tolist()
    position = {batch: index for index, batch in enumerate(labels)}
    records = {record.version: record for record in registry.versions()}
    measured = batches[batches["production_metrics"].notna()]
    x = [position[b] for b in measured["batch"]]
    figure, (over_time, contest) = plt.subplots(2, 1, figsize=(13, 7), sharex=True)
    over_time.plot(
        x,
        [m["roc_auc"] for m in measured["production_metrics"]],
        marker="o",
        markersize=3,
        color="#333",
        label="production on each new batch",
    )
    over_time.step(
        x,
        [records[int(v)].metrics["valid"]["roc_auc"] for v in measured["reference_version"]],
        where="mid",
        linestyle="--",
        color="#4c72b0",
        label="its validation ROC AUC (registry record)",
    )
    over_time.set_title("the production model on every batch as it arrived (metric decay)", fontsize=10)
    promoted = {event.version for event in registry.events() if event.event == "promoted"}
    for record in records.values():
        stream, contenders = record.params.get("stream"), record.metrics.get("contenders")
        if not stream or stream["holdout_batch"] not in position:
            continue
        at = position[stream["holdout_batch"]]
        if contenders:
            contest.scatter([at], [contenders["warm_start"]["test"]["roc_auc"]], marker="^", color="#ff7f0e", s=25)
            contest.scatter([at], [contenders["scratch"]["test"]["roc_auc"]], marker="s", color="#9467bd", s=18)
            contest.scatter([at], [record.metrics["production"]["test"]["roc_auc"]], marker="o", color="#333", s=14)
        contest.scatter(
            [at],
            [record.metrics["test"]["roc_auc"]],
            marker="*",
            s=110,
            zorder=3,
            facecolor="none",
            edgecolor="#2ca02c" if record.version in promoted else "#c0392b",
        )
        if record.version not in promoted or len(records) <= 15:
            contest.annotate(
                f"v{record.version}",
                (at, record.metrics["test"]["roc_auc"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    for marker, color, label in (
        ("^", "#ff7f0e", "warm start"),
        ("s", "#9467bd", "from scratch"),
        ("o", "#333", "production then"),
        ("*", "#2ca02c", "registered, promoted"),
        ("*", "#c0392b", "registered, rejected"),
    ):
        contest.scatter([], [], marker=marker, color=color, label=label)
    contest.set_title("each retraining on its held-out batch", fontsize=10)
    for axis in (over_time, contest):
        axis.set_ylabel("ROC AUC")
        axis.legend(fontsize=7, loc="lower left", ncol=5)
    _ticks(contest, labels)
    production = registry.production()
    return Section(
        title="Model versions",
        intro=(
            "Every version the replay registered (the registry under stream.dir): how it was trained, on which "
            "batches, its ROC AUC on the batch held out from its training, the warm start's and the scratch "
            "model's ROC AUC there, and production's at that time. "
            + ("" if production is None else f"Version {production.version} is production.")
        ),
        tables=[("Versions", versions), ("Registry events", events)],
        figures=[
            (
                "Production ROC AUC over time; warm start, scratch and production on each held-out batch",
                save_figure(figure, folder / "models.png"),
            )
        ],
    )


def decisions_section(store: Store) -> Section:
    decisions = store.decisions()
    table = pd.DataFrame(
        {
            "at": decisions["at"],
            "batches": decisions["first_batch"] + ".." + decisions["last_batch"],
            "production": decisions["production_version"].map(lambda v: "" if pd.isna(v) else int(v)),
            "retrain": decisions["retrain"].astype(bool),
            "reasons": decisions["reasons"].map(lambda r: " | ".join(r)),
            "candidate": decisions["candidate_version"].map(lambda v: "" if pd.isna(v) else int(v)),
            "promoted": decisions["promoted"].astype(bool),
        }
    )
    retrained = int(table["retrain"].sum())
    return Section(
        title="Decisions",
        intro=(
            f"{len(table)} updates decided, {retrained} retrained, {int(table['promoted'].sum())} "
            "promoted a new version."
        ),
        tables=[("What each update saw and decided", table)],
    )


def runs_section(settings: Settings, folder: Path) -> Section:
    measured = runs(settings)
    if measured.empty:
        return Section(title="Time and memory", intro="No measured run yet.")
    per_mode = (
        measured.groupby("mode")
        .agg(
            runs=("seconds", "size"),
            median_seconds=("seconds", "median"),
            max_seconds=("seconds", "max"),
            max_peak_rss_mib=("peak_rss_mib", "max"),
        )
        .reset_index()
    )
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(13, 3.4))
    for mode, part in measured.groupby("mode"):
        time_axis.plot(part.index, part["seconds"], marker=".", linestyle="", label=mode)
        memory_axis.plot(part.index, part["peak_rss_mib"], marker=".", linestyle="", label=mode)
    time_axis.set_title("wall time per run, s", fontsize=10)
    memory_axis.set_title("peak resident memory per run, MiB", fontsize=10)
    for axis in (time_axis, memory_axis):
        axis.set_xlabel("run")
        axis.legend(fontsize=7)
    return Section(
        title="Time and memory",
        intro=f"From {settings.stream.dir.name}/runs.jsonl: every run.py run with its wall time, CPU time "
        "and the process's peak resident memory.",
        tables=[("Per mode", per_mode), ("Latest runs", measured.tail(20))],
        figures=[("Time and memory of every run", save_figure(figure, folder / "runs.png"))],
    )


def build_summary(settings: Settings) -> Path:
    """Write the summary page and return its path."""
    store, registry = Store(settings), replay_registry(settings)
    if not store.batch_ids():
        raise LookupError(f"the replay in {settings.stream.dir} has no batches yet: run `python run.py --mode update`")
    folder = settings.stream.dir / "report"
    sections = [
        batches_section(settings, store, folder),
        quality_over_time_section(settings, store, folder),
        drift_over_time_section(settings, store, folder),
        models_section(settings, store, registry, folder),
        decisions_section(store),
        runs_section(settings, folder),
    ]
    production, batches = registry.production(), store.batch_ids()
    summary = (
        f"The {settings.data.source} source replayed in batches of one '{settings.stream.batch}' period: "
        f"{len(batches)} batches stored ({batches[0]} to {batches[-1]}), {len(registry.versions())} model "
        "versions, "
        + (
            "none in production."
            if production is None
            else f"version {production.version} in production (held-out ROC AUC "
            f"{production.metrics['test']['roc_auc']:.3f})."
        )
    )
    path = folder / SUMMARY
    path.write_text(
        render(
            f"{settings.model.name}: continuous training on the batch stream",
            summary,
            sections,
            stamp=f"Generated {now()} (UTC)",
        )
    )
    log.info("wrote %s", path)
    return path
