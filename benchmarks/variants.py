"""Variants of the tuned TorchServe: its archive with model-config.yaml settings changed, its
environment with config.properties keys overridden, started as the image starts it.

A variant is a name and settings KEY=VALUE: a model-config.yaml key (minWorkers, maxWorkers,
batchSize, maxBatchDelay, handler.<option>) or env.<NAME> for the server's environment (any
config.properties key as TS_<KEY>, e.g. env.TS_ADAPTIVE_BATCHING=false).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.servers import Endpoint, torchserve_endpoint
from benchmarks.torchserve_defaults import repacked_archive
from harness.torchserve import torchserve
from model.artifact.archive import HANDLER_DIR

BASELINE = "tuned"


def parse_variant(name: str, assignments: list[str]) -> dict[str, Any]:
    """name + key=value settings -> {"name", "model_config": {...}, "env": {...}}."""
    model_config: dict[str, Any] = {}
    env: dict[str, str] = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if key.startswith("env."):
            env[key[4:]] = value
        elif key.startswith("handler."):
            model_config.setdefault("handler", {})[key[8:]] = yaml.safe_load(value)
        else:
            model_config[key] = yaml.safe_load(value)
    return {"name": name, "model_config": model_config, "env": env}


def variant_config(changes: dict[str, Any]) -> str:
    """handler/model-config.yaml with `changes` applied."""
    config = yaml.safe_load((HANDLER_DIR / "model-config.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def variant_server(
    model_dir: Path, workdir: Path, model: str, variant: dict[str, Any], plugins: Path | None
) -> Iterator[Endpoint]:
    """The tuned server (config.properties, the entrypoint, the frontend plugins) with the variant's
    archive and environment."""
    store = workdir / "model-store"
    repacked_archive(model_dir, store, variant_config(variant["model_config"]))
    with torchserve(store, workdir, model, extra_env=variant["env"], plugins=plugins) as server:
        yield torchserve_endpoint(server, model)
