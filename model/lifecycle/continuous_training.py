"""Continuous training over the batch stream: ingest, decide, retrain two ways, register, promote.

`update` (python run.py --mode update) does one step of the model's life:

1. Bootstrap. While the replay's registry has no production version, the first
   `stream.bootstrap_batches` batches are ingested (quality only: there is nothing to compare
   with yet) and a model is trained from scratch on them, its last passed batch held out; it is
   registered and promoted at once (there is no production to beat). The replay keeps its own
   registry and model store under stream.dir: it rewinds to the first week of the data, and its
   versions must never archive the model the pipeline registered for serving.
2. Ingest the next `stream.batches_per_update` batches (model/lifecycle/batch_store.py: quality, drift against
   production's training rows, production's metrics on each).
3. Decide on the batches no update has decided about yet. Any one reason retrains, and every
   reason is logged and stored: a passed batch with at least `retrain.drifted_features` drifted
   features (not counting `retrain.ignore_features`), or drifted predictions
   (`retrain.prediction_drift`); production's ROC AUC on the newest passed batch more than
   `retrain.auc_drop` below the validation ROC AUC in its registry record (metric decay);
   `retrain.max_batches` passed batches since production's own data (after its held-out batch),
   so a rejected candidate does not reset the count.
4. Retrain, time-aware: the newest passed batch is held out and never trained on; the
   `stream.window_batches` passed batches before it are the training window, its last
   `stream.valid_batches` validate (early stopping, threshold). Two models are trained on that
   window: a warm start (production's weights and preprocessing from the registry, fine-tuned
   for `warm_start.epochs` at `warm_start.learning_rate`, model/training/train.py: fine_tune) and one from
   scratch (model/training/train.py: train). The one with the higher ROC AUC on the held-out batch is
   registered as a candidate, with both models' metrics and production's on that batch in its
   record; its data hash is the MD5 of the content of its training rows (train + valid, in
   arrival order), which names the data as the pipeline's DVC hash does without a file per
   version. Both trainings are also recorded in the MLflow store of the pipeline's runs
   (paths.tracking, kind "stream warm_start" / "stream scratch"), their run ids in the record.
5. Promote the candidate when its held-out ROC AUC passes two rules, else reject it. The step:
   at least production's minus `stream.promote_tolerance` (a negative tolerance demands an
   improvement). The floor: at least the baseline's minus `stream.baseline_margin`, the
   baseline being the replay's first production version scored on the same held-out batch.
   The step alone lets a small loss through at every update, and those losses add up; the
   floor is a fixed model, so however many steps are taken, production never falls more than
   the margin below it. The baseline is scored on the held-out batch rather than remembered as
   a number, because weeks differ in how hard they are: a number from one week would block
   every candidate in a hard week and let a poor one through in an easy one. The check is the
   registry's gate (model/lifecycle/registry.py: the held-out check event, against the
   production it beat); the bootstrap, with nothing to beat, is promoted by a recorded override.
   The answer to "was a new model promoted" is what update returns (run.py prints it).

Scoring a file with the production version (python run.py --mode inference) lives in
model/lifecycle/scoring.py, the run log of every mode in model/lifecycle/runs.py.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from model.config import Settings, StreamSettings
from model.data.fingerprint import rows_hash
from model.data.quality import BATCH
from model.data.sources import load_source
from model.data.split import SPLIT, split_rows
from model.lifecycle.batch_store import Production, Store, ingest, model_metrics
from model.lifecycle.registry import HELD_OUT, ModelVersion, Registry, replay_registry, version_export
from model.training.train import fine_tune, train

log = logging.getLogger(__name__)

WARM, SCRATCH, BOOTSTRAP = "warm_start", "scratch", "bootstrap"


def training_batches(record: ModelVersion) -> list[str]:
    return [*record.params["stream"]["train_batches"], *record.params["stream"]["valid_batches"]]


def current_production(settings: Settings, store: Store, registry: Registry) -> Production | None:
    record = registry.production()
    if record is None:
        return None
    rows = store.clean_rows(training_batches(record))
    if rows.empty:
        raise RuntimeError(
            f"{store.path} does not hold the batches production version {record.version} was trained "
            f"on: the store and the registry in {settings.stream.dir} belong together; remove the "
            "folder to start the replay over"
        )
    return Production(record.version, version_export(settings, registry, record.version), rows)


# --- deciding ------------------------------------------------------------------------------------


@dataclass
class Decision:
    batches: list[str]
    retrain: bool = False
    reasons: list[str] = field(default_factory=list)


def decide(settings: Settings, store: Store, production: ModelVersion, batches: list[str]) -> Decision:
    """Whether the batches no update has decided about call for a retraining (module docstring, step 3)."""
    rule = settings.stream.retrain
    decision = Decision(batches)
    records = store.batches().set_index("batch")
    passed = [batch for batch in batches if records.loc[batch, "quality_passed"]]
    if not passed:
        decision.reasons.append("no new batch passed the quality checks: nothing to learn from or evaluate on")
        return decision
    triggers = []
    for batch in passed:
        drifted = [name for name in records["drifted"][batch] or [] if name not in rule.ignore_features]
        if len(drifted) >= rule.drifted_features:
            triggers.append(
                f"batch {batch}: {len(drifted)} features drift ({', '.join(drifted)}), "
                f"at least retrain.drifted_features = {rule.drifted_features}"
            )
        if rule.prediction_drift and records.loc[batch, "prediction_drifted"] == 1:
            triggers.append(f"batch {batch}: the production model's predicted probabilities drift")
    newest = passed[-1]
    metrics: dict[str, Any] | None = records["production_metrics"][newest]
    validated = production.metrics["valid"]["roc_auc"]
    if metrics is not None and metrics["roc_auc"] < validated - rule.auc_drop:
        triggers.append(
            f"batch {newest}: production ROC AUC {metrics['roc_auc']:.4f} is more than "
            f"retrain.auc_drop = {rule.auc_drop:g} below its validation ROC AUC {validated:.4f}"
        )
    trained_until = max(training_batches(production) + [production.params["stream"]["holdout_batch"]])
    since = [batch for batch in store.batch_ids(passed_only=True) if batch > trained_until]
    if len(since) >= rule.max_batches:
        triggers.append(
            f"{len(since)} passed batches since version {production.version}'s training data "
            f"(until {trained_until}), at least retrain.max_batches = {rule.max_batches}"
        )
    decision.retrain, decision.reasons = (
        bool(triggers),
        triggers
        or [
            f"no reason to retrain on {', '.join(passed)}: no drift over the limits, production ROC AUC "
            f"{'unknown' if metrics is None else format(metrics['roc_auc'], '.4f')} (validation {validated:.4f}), "
            f"{len(since)} of {rule.max_batches} batches since training"
        ],
    )
    return decision


def promotion_check(
    stream: StreamSettings, candidate: float, production: tuple[int, float], baseline: tuple[int, float]
) -> tuple[bool, list[str]]:
    """Continuous training's promotion rule on the held-out batch (module docstring, step 5): the
    step against production and the floor against the fixed baseline, each with its sentence.
    `production` and `baseline` are (version, held-out ROC AUC)."""
    step = production[1] - stream.promote_tolerance
    floor = baseline[1] - stream.baseline_margin
    above_step, above_floor = candidate >= step, candidate >= floor
    return above_step and above_floor, [
        f"held-out ROC AUC {candidate:.4f} vs production (version {production[0]}) {production[1]:.4f} - "
        f"stream.promote_tolerance {stream.promote_tolerance:g} = {step:.4f}: {'ok' if above_step else 'worse'}",
        f"held-out ROC AUC {candidate:.4f} vs the baseline (version {baseline[0]}, the first production) "
        f"{baseline[1]:.4f} - stream.baseline_margin {stream.baseline_margin:g} = {floor:.4f}: "
        f"{'ok' if above_floor else 'below the floor'}",
    ]


# --- training --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The time-aware split of one retraining (module docstring, step 4)."""

    train: list[str]
    valid: list[str]
    holdout: str

    def table(self, store: Store) -> pd.DataFrame:
        """The window's cleaned rows with the split column model/training/train.py reads (test = held out)."""
        rows = store.clean_rows([*self.train, *self.valid, self.holdout])
        split = {**{b: "train" for b in self.train}, **{b: "valid" for b in self.valid}, self.holdout: "test"}
        return rows.assign(**{SPLIT: rows[BATCH].map(split).astype("string")})


def training_window(settings: Settings, passed: list[str]) -> Window | None:
    """The newest passed batch held out, the window before it; None when too few batches passed."""
    stream = settings.stream
    if len(passed) < stream.valid_batches + 2:
        return None
    window = passed[:-1][-stream.window_batches :]
    return Window(window[: -stream.valid_batches], window[-stream.valid_batches :], passed[-1])


def work_settings(settings: Settings, name: str) -> Settings:
    work = settings.stream.dir / "work" / name
    if work.exists():  # left by an earlier update: each training starts clean
        shutil.rmtree(work)
    return settings.with_overrides(
        {"paths": {"model_dir": work / "model", "export_dir": work / "export", "metrics": work / "metrics.json"}}
    )


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key != "history"}


def training_hash(table: pd.DataFrame) -> str:
    """The data hash of a window's training rows (train + valid; the held-out batch is not trained on)."""
    return rows_hash(split_rows(table, "train", "valid"))


def track(
    settings: Settings, metrics: dict[str, Any], how: str, window: Window, table: pd.DataFrame, base: int | None = None
) -> str:
    """One training of the loop in the MLflow store the pipeline's runs go to (model/training/tracking.py)."""
    from model.training.tracking import track_training  # MLflow is heavy: imported when a model was trained

    extra: dict[str, Any] = {
        "stream.trained": how,
        "stream.train_batches": f"{window.train[0]}..{window.train[-1]}",
        "stream.valid_batches": ",".join(window.valid),
        "stream.holdout_batch": window.holdout,
    }
    if base is not None:
        extra["stream.warm_start_from_version"] = base
    return track_training(settings, metrics, training_hash(table), kind=f"stream {how}", extra_params=extra)


def register(
    registry: Registry,
    settings: Settings,
    model_dir: Path,
    how: str,
    window: Window,
    table: pd.DataFrame,
    metrics: dict[str, Any],
    runs: dict[str, str],
    note: str,
) -> ModelVersion:
    """A candidate with how it was trained, on which batches, the metrics of every contender and
    their MLflow run ids."""
    params = {
        "stream": {
            "trained": how,
            "train_batches": window.train,
            "valid_batches": window.valid,
            "holdout_batch": window.holdout,
            "warm_start": settings.stream.warm_start.model_dump(),
            "mlflow_runs": runs,
        },
        "model": settings.model.model_dump(),
        "train": settings.train.model_dump(),
        "seed": settings.seed,
        "data": {"source": settings.data.source, "batch": settings.stream.batch},
    }
    return registry.register(model_dir, data_hash=training_hash(table), params=params, metrics=metrics, note=note)


def bootstrap(settings: Settings, store: Store, registry: Registry, source: pd.DataFrame) -> bool:
    """The first model of the replay (module docstring, step 1)."""
    stored = store.batch_ids()
    ingest(store, source, max(settings.stream.bootstrap_batches - len(stored), 0), production=None)
    batches = store.batch_ids()
    window = training_window(settings, store.batch_ids(passed_only=True))
    if window is None:
        raise RuntimeError(
            f"the bootstrap needs at least {settings.stream.valid_batches + 2} batches that pass the "
            f"quality checks, {len(store.batch_ids(passed_only=True))} of {len(batches)} did: "
            "raise stream.bootstrap_batches or look at the quality problems in the log"
        )
    table = window.table(store)
    work = work_settings(settings, SCRATCH)
    metrics = train(work, table)
    tracked = {BOOTSTRAP: track(settings, metrics, BOOTSTRAP, window, table)}
    record = register(
        registry,
        settings,
        work.paths.model_dir,
        BOOTSTRAP,
        window,
        table,
        {**_summary(metrics), "trained": BOOTSTRAP},
        tracked,
        note=f"bootstrap: from scratch on {window.train[0]}..{window.valid[-1]}",
    )
    registry.promote(record.version, force="bootstrap: the replay's first model, no production version to beat")
    store.add_decision(
        batches[0],
        batches[-1],
        None,
        True,
        ["bootstrap: no production version yet"],
        record.version,
        True,
        {"holdout": window.holdout, "candidate": metrics["test"]},
    )
    log.info(
        "bootstrap: version %d is production (held-out ROC AUC %.4f on %s)",
        record.version,
        metrics["test"]["roc_auc"],
        window.holdout,
    )
    return True


def retrain(
    settings: Settings, store: Store, registry: Registry, production: ModelVersion, decision: Decision
) -> tuple[ModelVersion | None, bool, dict[str, Any]]:
    """Warm start and scratch on the same window, the better one registered, then promoted or rejected."""
    window = training_window(settings, store.batch_ids(passed_only=True))
    if window is None:
        decision.reasons.append("too few passed batches to hold one out and train on the rest")
        return None, False, {}
    table = window.table(store)
    warm_settings, scratch_settings = work_settings(settings, WARM), work_settings(settings, SCRATCH)
    contenders = {
        WARM: fine_tune(
            warm_settings,
            table,
            registry.weights_dir(production.version),
            settings.stream.warm_start.epochs,
            settings.stream.warm_start.learning_rate,
        ),
        SCRATCH: train(scratch_settings, table),
    }
    tracked = {
        name: track(settings, metrics, name, window, table, production.version if name == WARM else None)
        for name, metrics in contenders.items()
    }
    export = version_export(settings, registry, production.version)
    holdout = model_metrics(export, split_rows(table, "test"))
    if holdout is None:  # the trainings' own ROC AUC on it is NaN: no ranking to compare them by
        decision.reasons.append(f"the held-out batch {window.holdout} holds one class only: nothing to compare on")
        return None, False, {}
    best = max(contenders, key=lambda name: contenders[name]["test"]["roc_auc"])
    model_dir = (warm_settings if best == WARM else scratch_settings).paths.model_dir
    aucs = {name: metrics["test"]["roc_auc"] for name, metrics in contenders.items()}
    log.info(
        "held-out batch %s: warm start ROC AUC %.4f, scratch %.4f, production (version %d) %.4f",
        window.holdout,
        aucs[WARM],
        aucs[SCRATCH],
        production.version,
        holdout["roc_auc"],
    )
    metrics = {
        **_summary(contenders[best]),
        "trained": best,
        "contenders": {name: _summary(metrics) for name, metrics in contenders.items()},
        "production": {"version": production.version, "test": holdout},
    }
    candidate = register(
        registry,
        settings,
        model_dir,
        best,
        window,
        table,
        metrics,
        tracked,
        note=f"{best.replace('_', ' ')} on {window.train[0]}..{window.valid[-1]}, held out {window.holdout}",
    )
    baseline = registry.first_production() or production  # production was promoted: never None
    baseline_metrics = (
        holdout
        if baseline.version == production.version
        else model_metrics(version_export(settings, registry, baseline.version), split_rows(table, "test"))
    )
    assert baseline_metrics is not None  # measured on the rows holdout was: they hold both classes
    promoted, checks = promotion_check(
        settings.stream,
        aucs[best],
        (production.version, holdout["roc_auc"]),
        (baseline.version, baseline_metrics["roc_auc"]),
    )
    detail = {
        "passed": promoted,
        "against": production.version,
        "holdout": window.holdout,
        "candidate_roc_auc": aucs[best],
        "production_roc_auc": holdout["roc_auc"],
        "production": production.version,
        "tolerance": settings.stream.promote_tolerance,
        "baseline": baseline.version,
        "baseline_roc_auc": baseline_metrics["roc_auc"],
        "baseline_margin": settings.stream.baseline_margin,
        "checks": checks,
        "reasons": list(decision.reasons),
    }
    registry.record(candidate.version, HELD_OUT, detail)  # the gate the replay's registry asks of a promotion
    if promoted:
        registry.promote(candidate.version, {"checks": checks})
    else:
        registry.reject(candidate.version, {"checks": checks})
    log.info("version %d %s: %s", candidate.version, "promoted" if promoted else "rejected", "; ".join(checks))
    decision.reasons.extend(checks)
    return candidate, promoted, {**detail, "trained": best, "contenders": aucs}


def update(settings: Settings, source: pd.DataFrame | None = None, batches: int | None = None) -> bool:
    """One step of the lifecycle (module docstring); True when a new model was promoted.
    `source` is the table to replay (default: the configured source, model/data/sources.py)."""
    store, registry = Store(settings), replay_registry(settings)
    unknown = [name for name in settings.stream.retrain.ignore_features if name not in settings.features.names]
    if unknown:
        raise ValueError(
            f"stream.retrain.ignore_features names {', '.join(unknown)}, which are not features; "
            f"the features are {', '.join(settings.features.names)}"
        )
    source = load_source(settings) if source is None else source
    production = registry.production()
    if production is None:
        return bootstrap(settings, store, registry, source)
    ingested = ingest(
        store, source, batches or settings.stream.batches_per_update, current_production(settings, store, registry)
    )
    pending = store.undecided()
    if not pending:
        log.info(
            "nothing to decide: the replay has reached the end of the source (%d batches stored)",
            len(store.batch_ids()),
        )
        return False
    log.info("ingested %d batch(es); deciding on %s", len(ingested), ", ".join(pending))
    decision = decide(settings, store, production, pending)
    for reason in decision.reasons:
        log.info("%s: %s", "retrain" if decision.retrain else "keep", reason)
    detail: dict[str, Any]
    candidate, promoted, detail = None, False, {}
    if decision.retrain:
        candidate, promoted, detail = retrain(settings, store, registry, production, decision)
    store.add_decision(
        pending[0],
        pending[-1],
        production.version,
        decision.retrain,
        decision.reasons,
        None if candidate is None else candidate.version,
        promoted,
        detail,
    )
    return promoted
