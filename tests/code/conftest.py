"""Fixtures of the code tests that need no trained model."""

from __future__ import annotations

import json

import pytest

from model.artifact.export import input_schema
from model.config import ROOT, load_settings

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())


@pytest.fixture(scope="session")
def config_schema() -> dict:
    """The request schema the exporter writes, built from params.yaml with a two-word vocabulary
    per categorical field (missing, and the sample's value) instead of a trained model's."""
    settings = load_settings()
    config = {
        "name": "mymodel",
        "version": "1.0-test",
        "target": "late",
        "categorical": list(settings.features.categorical),
        "numeric": list(settings.features.numeric),
        "vocabularies": [{"": 1, SAMPLE.get(name) or "X": 2} for name in settings.features.categorical],
        "features": settings.features.model_dump(),
        "serving": {**settings.serving.model_dump(), "threshold": 0.5},
    }
    return input_schema(config)
