"""The batch stream: the source replayed in time order, one batch (a week by default) at a time,
into a raw store, with data quality, drift and the production model's metric on every batch.

The raw store is one SQLite file, <stream.dir>/store.sqlite:

- `ingested`: the source's rows as they arrived (before cleaning: quality is measured on what
  came in), with the batch they belong to; the time column as ISO text.
- `batches`: one row per batch. Its id is the batch's first day (ISO date; with `stream.batch: W`
  the Monday of the week, so the first week of 2013 is 2012-12-31). Rows, positive share,
  ingestion time, whether it passed the quality limits (and the sentences saying why not), the
  production version it was compared with, the features that drift against that version's
  training rows, whether its predictions drift, and that version's metrics on the batch: the
  replay knows every label when a batch arrives, as a delay is known a day after the flight.
- `batch_quality`: model/data/quality.py's measurements of the batch, per column.
- `batch_drift`: model/analysis/drift.py's PSI and test per feature (and the predictions) of the batch.
- `decisions`: what every update decided about the batches it saw (model/lifecycle/continuous_training.py).

Which batch comes next is derived from the store alone (the first batch of the source after the
newest one stored), and each batch is written in one transaction, so ingestion is idempotent and
a run that stops halfway is resumed by the next one. A batch that breaks a quality limit is
stored and reported but quarantined: it never trains, validates or evaluates a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.analysis.drift import COLUMNS as DRIFT_COLUMNS
from model.analysis.drift import PREDICTION, feature_drift, prediction_drift
from model.artifact.predict import load_served_model, predict_probability
from model.base.sqlite_store import now, sqlite_transaction
from model.config import Settings
from model.data.quality import BATCH, clean, measure, problems
from model.data.sources import TARGET, TIME
from model.training.metrics import classification_metrics

log = logging.getLogger(__name__)

STORE = "store.sqlite"
QUALITY_COLUMNS = [
    "column",
    "kind",
    "rows",
    "missing_share",
    "out_of_range_share",
    "mean",
    "cardinality",
    "new_categories",
    "duplicate_share",
]

_TABLES = """
CREATE TABLE IF NOT EXISTS batches (
    batch TEXT PRIMARY KEY,
    period TEXT NOT NULL,
    first_time TEXT NOT NULL,
    last_time TEXT NOT NULL,
    rows INTEGER NOT NULL,
    positive_share REAL NOT NULL,
    ingested_at TEXT NOT NULL,
    quality_passed INTEGER NOT NULL,
    problems TEXT NOT NULL,
    reference_version INTEGER,
    drifted TEXT,
    prediction_drifted INTEGER,
    production_metrics TEXT
);
CREATE TABLE IF NOT EXISTS batch_quality (
    batch TEXT NOT NULL REFERENCES batches(batch), column TEXT NOT NULL, kind TEXT NOT NULL, rows INTEGER,
    missing_share REAL, out_of_range_share REAL, mean REAL, cardinality INTEGER, new_categories INTEGER,
    duplicate_share REAL
);
CREATE TABLE IF NOT EXISTS batch_drift (
    batch TEXT NOT NULL REFERENCES batches(batch), reference_version INTEGER NOT NULL, feature TEXT NOT NULL,
    kind TEXT NOT NULL, psi REAL, test TEXT, statistic REAL, p_value REAL, drifted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    first_batch TEXT NOT NULL,
    last_batch TEXT NOT NULL,
    production_version INTEGER,
    retrain INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    candidate_version INTEGER,
    promoted INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass(frozen=True)
class Production:
    """The model a batch is compared with: its registry version, its served export and the
    (cleaned) rows it was trained on, which are the drift reference."""

    version: int
    export_dir: Path
    training_rows: pd.DataFrame


@dataclass(frozen=True)
class IngestedBatch:
    batch: str
    period: str
    rows: int
    quality_passed: bool
    problems: list[str]
    drifted: list[str] | None
    prediction_drifted: bool | None
    production_metrics: dict[str, Any] | None


def batch_ids(times: pd.Series, settings: Settings) -> pd.Series:
    """Each row's batch: the first day of its period (stream.batch) as an ISO date."""
    periods = times.dt.to_period(settings.stream.batch)
    return periods.dt.start_time.dt.strftime("%Y-%m-%d").rename(BATCH)


def json_or_none(text: Any) -> Any:
    """A JSON column's value; SQL NULL (None or NaN, as pandas reads it) is None."""
    return json.loads(text) if isinstance(text, str) else None


class Store:
    """The raw store of one replay (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = settings.stream.dir / STORE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        features = ", ".join(f'"{name}" TEXT' for name in settings.features.categorical)
        numbers = ", ".join(f'"{name}" REAL' for name in settings.features.numeric)
        with self._db() as db:
            db.executescript(_TABLES)
            db.execute(
                f'CREATE TABLE IF NOT EXISTS ingested (batch TEXT NOT NULL, "{TIME}" TEXT NOT NULL, '
                f'{features}, {numbers}, "{TARGET}" INTEGER NOT NULL)'
            )
            db.execute("CREATE INDEX IF NOT EXISTS ingested_batch ON ingested (batch)")

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self.path)

    # --- reading -----------------------------------------------------------------------------

    def batches(self) -> pd.DataFrame:
        """Every stored batch in time order, JSON columns decoded."""
        with self._db() as db:
            frame = pd.read_sql_query("SELECT * FROM batches ORDER BY batch", db)
        for column in ("problems", "drifted", "production_metrics"):
            frame[column] = frame[column].map(json_or_none)
        frame["quality_passed"] = frame["quality_passed"].astype(bool)
        return frame

    def batch_ids(self, passed_only: bool = False) -> list[str]:
        query = "SELECT batch FROM batches" + (" WHERE quality_passed = 1" if passed_only else "") + " ORDER BY batch"
        with self._db() as db:
            return [row["batch"] for row in db.execute(query)]

    def rows(self, batches: list[str]) -> pd.DataFrame:
        """The raw rows of these batches, in arrival order, typed as the source gives them."""
        marks = ", ".join("?" for _ in batches)
        with self._db() as db:
            frame = pd.read_sql_query(
                f"SELECT * FROM ingested WHERE batch IN ({marks}) ORDER BY rowid", db, params=list(batches)
            )
        frame[TIME] = pd.to_datetime(frame[TIME])
        for name in self.settings.features.categorical:
            frame[name] = frame[name].astype("string")
        for name in self.settings.features.numeric:
            frame[name] = frame[name].astype("float64")
        frame[TARGET] = frame[TARGET].astype("int8")
        return frame

    def clean_rows(self, batches: list[str]) -> pd.DataFrame:
        """The rows cleaned as training data is (model/data/quality.py: clean)."""
        return clean(self.rows(batches), self.settings)

    def table(self, name: str) -> pd.DataFrame:
        with self._db() as db:
            return pd.read_sql_query(f"SELECT * FROM {name} ORDER BY rowid", db)  # noqa: S608 (fixed names)

    def decisions(self) -> pd.DataFrame:
        with self._db() as db:
            frame = pd.read_sql_query("SELECT * FROM decisions ORDER BY id", db)
        for column in ("reasons", "detail"):
            frame[column] = frame[column].map(json.loads)
        return frame

    def undecided(self) -> list[str]:
        """Batches stored after the newest one an update has decided about."""
        with self._db() as db:
            last = db.execute("SELECT MAX(last_batch) FROM decisions").fetchone()[0]
            args: tuple[str, ...]
            query, args = "SELECT batch FROM batches ORDER BY batch", ()
            if last is not None:
                query, args = "SELECT batch FROM batches WHERE batch > ? ORDER BY batch", (last,)
            return [row["batch"] for row in db.execute(query, args)]

    # --- writing -----------------------------------------------------------------------------

    def add_batch(
        self,
        batch: str,
        period: str,
        raw: pd.DataFrame,
        quality: pd.DataFrame,
        found: list[str],
        drift: pd.DataFrame | None,
        production: Production | None,
        production_metrics: dict[str, Any] | None,
    ) -> IngestedBatch:
        """Rows, measurements and the batch record in one transaction; a stored batch is left as it is."""
        features = self.settings.features.names
        columns = [BATCH, TIME, *features, TARGET]
        rows = raw.assign(**{BATCH: batch, TIME: raw[TIME].dt.strftime("%Y-%m-%dT%H:%M:%S")})[columns]
        values = rows.astype(object).where(rows.notna(), None).itertuples(index=False, name=None)
        drifted = (
            None if drift is None else drift.loc[drift["drifted"] & (drift["kind"] != PREDICTION), "feature"].tolist()
        )
        predictions = None if drift is None else drift.loc[drift["kind"] == PREDICTION, "drifted"]
        prediction_drifted = None if predictions is None or predictions.empty else bool(predictions.iloc[0])
        record = IngestedBatch(
            batch, period, len(raw), not found, found, drifted, prediction_drifted, production_metrics
        )
        with self._db() as db:
            if db.execute("SELECT 1 FROM batches WHERE batch = ?", (batch,)).fetchone():
                log.info("batch %s is already stored: left as it is", batch)
                return record
            quoted = ", ".join(f'"{name}"' for name in columns)
            db.executemany(f"INSERT INTO ingested ({quoted}) VALUES ({', '.join('?' for _ in columns)})", values)
            quality_rows = quality[QUALITY_COLUMNS].astype(object).where(quality[QUALITY_COLUMNS].notna(), None)
            db.executemany(
                f"INSERT INTO batch_quality VALUES (?, {', '.join('?' for _ in QUALITY_COLUMNS)})",
                [(batch, *row) for row in quality_rows.itertuples(index=False, name=None)],
            )
            if drift is not None and production is not None:  # drift is measured against production
                drift_rows = drift[DRIFT_COLUMNS].astype(object).where(drift[DRIFT_COLUMNS].notna(), None)
                db.executemany(
                    f"INSERT INTO batch_drift VALUES (?, ?, {', '.join('?' for _ in DRIFT_COLUMNS)})",
                    [(batch, production.version, *row) for row in drift_rows.itertuples(index=False, name=None)],
                )
            db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch,
                    period,
                    rows[TIME].iloc[0],
                    rows[TIME].iloc[-1],
                    len(raw),
                    float(raw[TARGET].mean()),
                    now(),
                    int(not found),
                    json.dumps(found),
                    None if production is None else production.version,
                    None if drifted is None else json.dumps(drifted),
                    None if prediction_drifted is None else int(prediction_drifted),
                    None if production_metrics is None else json.dumps(production_metrics),
                ),
            )
        return record

    def add_decision(
        self,
        first_batch: str,
        last_batch: str,
        production_version: int | None,
        retrain: bool,
        reasons: list[str],
        candidate_version: int | None,
        promoted: bool,
        detail: dict[str, Any],
    ) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO decisions (at, first_batch, last_batch, production_version, retrain, reasons, "
                "candidate_version, promoted, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now(),
                    first_batch,
                    last_batch,
                    production_version,
                    int(retrain),
                    json.dumps(reasons),
                    candidate_version,
                    int(promoted),
                    json.dumps(detail),
                ),
            )


def scored(export_dir: Path, frame: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The served model's probabilities for these rows, and its decision threshold."""
    model, schema = load_served_model(export_dir)
    return predict_probability(model, schema, frame).astype("float64"), float(schema["x-model"]["threshold"])


def model_metrics(export_dir: Path, frame: pd.DataFrame) -> dict[str, Any] | None:
    """ROC AUC and the rest (model/analysis/evaluate.py) of a served model on labelled rows; None when
    the rows hold one class only (no ranking to measure)."""
    labels = frame[TARGET].to_numpy()
    if len(np.unique(labels)) < 2:
        return None
    probability, threshold = scored(export_dir, frame)
    return classification_metrics(labels, probability, threshold)


def ingest_batch(
    store: Store, batch: str, period: str, raw: pd.DataFrame, production: Production | None
) -> IngestedBatch:
    """Measure one raw batch and store it: quality against the production model's training rows
    (new categories), drift of features and predictions against them, and production's metrics.
    Without a production model yet (the bootstrap), only quality is measured."""
    settings = store.settings
    weekly = settings.with_overrides({"data": {"batch": settings.stream.batch}})
    reference = raw if production is None else production.training_rows
    quality = measure(raw, weekly, reference).drop(columns=BATCH)
    found = problems(quality.assign(**{BATCH: batch}), settings)
    drift, metrics = None, None
    if production is not None:
        current = clean(raw.copy(), settings)
        drift = feature_drift(production.training_rows, current, settings)
        reference_probability, _ = scored(production.export_dir, production.training_rows)
        current_probability, _ = scored(production.export_dir, current)
        drift = pd.concat(
            [drift, prediction_drift(reference_probability, current_probability, settings)], ignore_index=True
        )
        metrics = model_metrics(production.export_dir, current)
    record = store.add_batch(batch, period, raw, quality, found, drift, production, metrics)
    auc = "" if metrics is None else f", production ROC AUC {metrics['roc_auc']:.4f}"
    log.info(
        "batch %s: %d rows, quality %s, %s%s",
        batch,
        len(raw),
        "passed" if not found else f"FAILED ({len(found)} problems: quarantined)",
        "drift not measured (no production model yet)"
        if record.drifted is None
        else "drifted: " + (", ".join(record.drifted) or "nothing"),
        auc,
    )
    for sentence in found:
        log.warning("%s", sentence)
    return record


def pending_batches(store: Store, source: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """The source's batches after the newest stored one, in time order: (id, period, raw rows)."""
    ids = batch_ids(source[TIME], store.settings)
    stored = store.batch_ids()
    newest = stored[-1] if stored else ""
    later = source.loc[ids > newest]
    periods = later[TIME].dt.to_period(store.settings.stream.batch).astype(str)
    return [
        (batch, periods.loc[part.index[0]], part.reset_index(drop=True))
        for batch, part in later.groupby(ids.loc[later.index], sort=True)
    ]


def ingest(store: Store, source: pd.DataFrame, count: int, production: Production | None) -> list[IngestedBatch]:
    """Ingest the next `count` batches of the source (fewer at its end)."""
    return [
        ingest_batch(store, batch, period, raw, production)
        for batch, period, raw in pending_batches(store, source)[:count]
    ]
