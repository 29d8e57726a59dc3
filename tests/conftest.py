"""Shared fixtures: a small time slice of the real data, a model trained on it, its archive,
and a real TorchServe serving that archive (started once, always stopped)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from handler.frontend.build_plugin import build_plugin
from harness.torchserve import Server, torchserve
from model.artifact.archive import build_archive
from model.artifact.export import SCHEMA, TORCHSCRIPT, export_model
from model.config import Settings, load_settings
from model.data.prepare import build_table
from model.data.sources import read_flight_tables
from model.training.train import train
from tests.tiers import mark_tiers, refuse_slow_fixture, slow_fixture

# Under `make test` the suite inherits make's own variables (MAKELEVEL prints "Entering directory"
# lines); the tests run `make` as a user does.
for _name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
    os.environ.pop(_name, None)

# Three winter months keep the suite fast: train on Jan-Feb, validate on early
# March, test on late March.
SLICE = {
    "data": {
        "window": {"start": "2013-01-01", "end": "2013-04-01"},
        "split": {"valid_start": "2013-03-01", "test_start": "2013-03-16"},
    },
    "train": {"max_epochs": 6, "patience": 2},
}


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    work = tmp_path_factory.mktemp("pipeline")
    paths = {
        "raw": work / "raw.parquet",
        "processed": work / "table.parquet",
        "plots": work / "plots",
        "tracking": work / "mlflow",
        "quality_db": work / "quality.sqlite",
        "quality": work / "quality.parquet",
        "model_dir": work / "model",
        "export_dir": work / "export",
        "metrics": work / "metrics.json",
        "comparison": work / "comparison.json",
        "model_store": work / "model-store",
        "report_dir": work / "report",
        "registry": work / "registry",
    }
    return load_settings().with_overrides({**SLICE, "paths": paths})


@pytest.fixture(scope="session")
def raw_tables() -> dict[str, pd.DataFrame]:
    return read_flight_tables()


@pytest.fixture(scope="session")
def table(settings: Settings, raw_tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return build_table(settings, raw_tables)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_tiers(config, items)


def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> None:
    refuse_slow_fixture(fixturedef)


@pytest.fixture(scope="session")
@slow_fixture
def metrics(settings: Settings, table: pd.DataFrame) -> dict:
    metrics = train(settings, table)
    export_model(settings.paths.model_dir, settings.paths.export_dir)
    return metrics


@pytest.fixture(scope="session")
def scripted(settings: Settings, metrics: dict) -> torch.jit.ScriptModule:
    return torch.jit.load(str(settings.paths.export_dir / TORCHSCRIPT))


@pytest.fixture(scope="session")
def schema(settings: Settings, metrics: dict) -> dict:
    return json.loads((settings.paths.export_dir / SCHEMA).read_text())


@pytest.fixture(scope="session")
def archive(settings: Settings, metrics: dict) -> Path:
    return build_archive(settings.paths.model_dir, settings.paths.model_store)


@pytest.fixture(scope="session")
@slow_fixture
def browser():
    """Headless Chromium (Debian's, `make browser-tools`), started once for the session."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS, chromium
    from tests.tools import unavailable

    binary = chromium()
    if binary is None:
        unavailable("chromium is missing: `make browser-tools` (tests/system-tools.sh) installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
@slow_fixture
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The frontend plugin (Open Inference Protocol v2), built as `make archive` builds it."""
    return build_plugin(tmp_path_factory.mktemp("plugins")).parent


@pytest.fixture(scope="session")
@slow_fixture
def server(archive: Path, plugins: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    with torchserve(archive.parent, tmp_path_factory.mktemp("torchserve"), plugins=plugins) as running:
        yield running
