"""Fixtures of the batch-stream tests: the Jan-Mar slice replayed week by week into a temporary
folder, and one bootstrapped replay that each test copies before changing it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from model.config import Settings
from model.data.sources import load_source
from model.lifecycle.continuous_training import update
from tests.tiers import slow_fixture

# Five weeks bootstrap the replay (three train, one validates, one is held out); two epochs keep it quick.
STREAM = {
    "batch": "W",
    "bootstrap_batches": 5,
    "batches_per_update": 1,
    "window_batches": 6,
    "valid_batches": 1,
    "retrain": {
        "drifted_features": 3,
        "ignore_features": ["month"],
        "prediction_drift": True,
        "auc_drop": 0.03,
        "max_batches": 4,
    },
    "warm_start": {"epochs": 2, "learning_rate": 0.0005},
    "promote_tolerance": 0.005,
}

Replay = Callable[..., Settings]


@pytest.fixture(scope="session")
def replay_settings(settings: Settings) -> Replay:
    """Settings of a replay living in `folder`, with `stream` keys replaced as given."""

    def make(folder: Path, **stream) -> Settings:
        merged = {**STREAM, **stream, "dir": str(folder)}
        merged["retrain"] = {**STREAM["retrain"], **stream.get("retrain", {})}
        return settings.with_overrides({"stream": merged, "train": {"max_epochs": 2, "patience": 1}})

    return make


@pytest.fixture(scope="session")
def source(settings: Settings, raw_tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return load_source(settings, raw_tables)


@pytest.fixture(scope="session")
@slow_fixture
def bootstrapped(replay_settings: Replay, source: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A replay after its first update (the bootstrap); never changed: copy it with `replay`."""
    folder = tmp_path_factory.mktemp("bootstrapped")
    assert update(replay_settings(folder), source) is True
    return folder


@pytest.fixture
def replay(bootstrapped: Path, replay_settings: Replay, tmp_path: Path) -> Replay:
    """A copy of the bootstrapped replay, with `stream` keys replaced as given."""
    folder = tmp_path / "stream"
    shutil.copytree(bootstrapped, folder)
    return lambda **stream: replay_settings(folder, **stream)
