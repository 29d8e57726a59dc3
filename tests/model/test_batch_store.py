"""The batch stream's raw store: time-ordered, idempotent ingestion with quality per batch,
and drift plus production metrics once a production model exists (model/lifecycle/batch_store.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np
import pandas as pd

from model.config import Settings
from model.data.sources import TARGET, TIME
from model.lifecycle.batch_store import Store, batch_ids, ingest, ingest_batch, pending_batches
from model.lifecycle.continuous_training import current_production
from model.lifecycle.registry import replay_registry

Replay = Callable[..., Settings]  # the fixtures of tests/model/conftest.py


def test_ingest_is_idempotent_and_in_time_order(replay_settings: Replay, source: pd.DataFrame, tmp_path) -> None:
    replay = replay_settings(tmp_path)
    store = Store(replay)
    first = ingest(store, source, 2, production=None)
    again = Store(replay)  # a new run on the same store carries on where the last one stopped
    second = ingest(again, source, 1, production=None)
    weeks = sorted(batch_ids(source[TIME], replay).unique())
    assert [b.batch for b in first + second] == weeks[:3]

    # The same batch offered twice is stored once.
    batch, period, raw = pending_batches(Store(replay), source)[0]
    ingest_batch(store, weeks[0], period, source[batch_ids(source[TIME], replay) == weeks[0]], None)
    rows = store.rows(weeks[:3])
    expected = source[batch_ids(source[TIME], replay).isin(weeks[:3])]
    assert len(rows) == len(expected)
    assert rows[TIME].is_monotonic_increasing
    assert rows[TIME].tolist() == expected[TIME].tolist()
    assert rows[TARGET].tolist() == expected[TARGET].tolist()
    assert store.batch_ids() == weeks[:3]
    assert batch == weeks[3]  # what comes next is read from the store

    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 3


def test_every_batch_gets_quality_rows(replay_settings: Replay, source: pd.DataFrame, tmp_path) -> None:
    replay = replay_settings(tmp_path)
    store = Store(replay)
    ingest(store, source, 2, production=None)
    quality = store.table("batch_quality")
    for batch in store.batch_ids():
        assert set(quality.loc[quality["batch"] == batch, "column"]) == set(replay.features.names)
    batches = store.batches()
    assert batches["quality_passed"].all()
    assert batches["drifted"].isna().all()  # nothing to compare with before a production model


def test_a_batch_breaking_a_quality_limit_is_quarantined(
    replay_settings: Replay, source: pd.DataFrame, tmp_path
) -> None:
    replay = replay_settings(tmp_path)
    store = Store(replay)
    week = batch_ids(source[TIME], replay)
    raw = source[week == week.iloc[0]].copy()
    raw.loc[raw.index[: int(0.8 * len(raw))], "carrier"] = None
    record = ingest_batch(store, week.iloc[0], "week", raw.reset_index(drop=True), None)
    assert not record.quality_passed
    assert any("carrier" in sentence and "missing" in sentence for sentence in record.problems)
    assert store.batch_ids(passed_only=True) == []
    assert store.batch_ids() == [week.iloc[0]]


def test_batches_after_the_bootstrap_get_drift_and_production_metrics(replay: Replay, source: pd.DataFrame) -> None:
    bootstrapped = replay()
    store = Store(bootstrapped)
    production = current_production(bootstrapped, store, replay_registry(bootstrapped))
    (record,) = ingest(store, source, 1, production)
    assert record.drifted is not None and record.prediction_drifted is not None
    assert 0.5 < record.production_metrics["roc_auc"] < 1
    drift = store.table("batch_drift")
    assert set(drift.loc[drift["batch"] == record.batch, "feature"]) == {
        *bootstrapped.features.names,
        f"{bootstrapped.data.target}_probability",
    }
    assert (drift["reference_version"] == production.version).all()
    # The drift reference is exactly what production was trained on.
    trained = replay_registry(bootstrapped).production().params["stream"]
    assert len(production.training_rows) == len(store.rows(trained["train_batches"] + trained["valid_batches"]))
    assert np.isfinite(drift["psi"]).all()
