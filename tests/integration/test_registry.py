"""The model registry against a real TorchServe: versions side by side, promotion and rollback
through the management API while requests keep being answered, and no restart."""

import json
import shutil
import subprocess
import sys
import threading

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file

from model.config import DEFAULT_CONFIG
from model.lifecycle.registry import deploy, promote, rollback
from model.lifecycle.torchserve import torchserve
from model.lifecycle.torchserve_versions import TorchServeVersions
from model.lifecycle.versions import ARCHIVED, CANDIDATE, PRODUCTION, Registry, RegistryError
from model.training.weights import CONFIG, WEIGHTS

SAMPLE = [json.loads((DEFAULT_CONFIG.parent / "sample_input.json").read_text())]  # a list in, a list out


def shifted_model(model_dir, target, bias: float):
    """A second, different model: the trained one with its output bias moved."""
    shutil.copytree(model_dir, target)
    weights = load_file(str(target / WEIGHTS))
    last = sorted(name for name in weights if name.endswith(".bias"))[-1]
    weights[last] = weights[last] + bias
    save_file(weights, str(target / WEIGHTS))
    config = json.loads((target / CONFIG).read_text())
    (target / CONFIG).write_text(json.dumps({**config, "version": config["version"] + "-shifted"}))
    return target


@pytest.fixture(scope="module")
def registry(settings, metrics, tmp_path_factory):
    work = tmp_path_factory.mktemp("registry")
    registry = Registry(work / "registry", work / "model-store", settings.model.name)
    record = {"data_hash": "0" * 32, "params": {"seed": settings.seed}}
    registry.register(settings.paths.model_dir, metrics={"test": metrics["test"]}, note="trained", **record)
    registry.promote(1)
    registry.register(shifted_model(settings.paths.model_dir, work / "shifted", 1.5), metrics={}, note="shifted",
                      **record)
    return registry


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory):
    """TorchServe starting with the production archive, as a deployment would."""
    with torchserve(registry.model_store, tmp_path_factory.mktemp("registry-torchserve"),
                    extra_env={"TS_LOAD_MODELS": registry.get(1).archive}) as server:
        yield server, TorchServeVersions(server.management_url, registry.name)


def answer(server, version=""):
    url = f"{server.inference_url}/predictions/mymodel" + (f"/{version}" if version else "")
    reply = requests.post(url, json=SAMPLE, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


class Traffic(threading.Thread):
    """Requests to the default version for as long as the block runs; every status is kept."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.statuses, self.versions, self.done = server, [], set(), threading.Event()

    def run(self):
        while not self.done.is_set():
            reply = requests.post(f"{self.server.inference_url}/predictions/mymodel", json=SAMPLE, timeout=30)
            self.statuses.append(reply.status_code)
            if reply.status_code == 200:
                self.versions.add(reply.json()[0]["model_version"])

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def test_each_version_has_a_record_and_its_own_archive(registry, settings, metrics):
    first, second = registry.get(1), registry.get(2)
    assert (first.status, second.status) == (PRODUCTION, CANDIDATE)
    assert first.model_id == metrics["model_version"] and second.model_id.endswith("-shifted")
    assert first.metrics["test"]["roc_auc"] == metrics["test"]["roc_auc"]
    assert first.created <= second.created and first.data_hash == "0" * 32
    assert [p.name for p in sorted(registry.model_store.glob("*.mar"))] == ["mymodel-v1.mar", "mymodel-v2.mar"]
    assert registry.weights_dir(2).joinpath(WEIGHTS).exists()
    assert [e.event for e in registry.events(1)] == ["registered", "promoted"]


def test_versions_are_served_side_by_side_and_promoted_and_rolled_back_without_restart(registry, served):
    server, versions = served
    deploy(registry, versions)  # production default, the candidate loaded beside it
    assert set(versions.loaded()) == {"1", "2"} and versions.default() == "1"
    one, two = answer(server, "1")[0], answer(server, "2")[0]
    assert (one["model_version"], two["model_version"]) == ("1", "2")
    assert two["late_probability"] > one["late_probability"]  # the shifted bias
    assert answer(server)[0]["model_version"] == "1"

    frontend = server.process.pid
    with Traffic(server) as traffic:
        promote(registry, 2, versions)
        assert answer(server)[0]["model_version"] == "2"
        rollback(registry, versions)
        assert answer(server)[0]["model_version"] == "1"
    assert traffic.statuses and set(traffic.statuses) == {200}, "requests failed during promote/rollback"
    assert traffic.versions <= {"1", "2"}
    assert server.process.poll() is None and server.process.pid == frontend

    assert (registry.get(1).status, registry.get(2).status) == (PRODUCTION, ARCHIVED)
    assert [e.event for e in registry.events(2)] == ["registered", "promoted", "rolled back"]
    archive = registry.archive_path(2).read_bytes()
    deploy(registry, versions)  # the archived version leaves the server, its archive stays in the store
    assert set(versions.loaded()) == {"1"}
    assert registry.archive_path(2).read_bytes() == archive


def test_rollback_needs_a_previous_production(tmp_path, settings, metrics):
    registry = Registry(tmp_path / "registry", tmp_path / "store", settings.model.name)
    registry.register(settings.paths.model_dir, data_hash="1" * 32, params={}, metrics={})
    with pytest.raises(RegistryError, match="no production"):
        registry.rollback()
    registry.promote(1)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    with pytest.raises(RegistryError, match="not a candidate"):
        registry.reject(1)


def test_the_command_line_rolls_back_in_one_command(registry, served, tmp_path):
    server, versions = served
    promote(registry, 2, versions)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": str(DEFAULT_CONFIG), "paths": {
        "registry": str(registry.root), "model_store": str(registry.model_store)}}))
    done = subprocess.run([sys.executable, "-m", "model.lifecycle.registry", "--config", str(params), "rollback",
                           "--management", server.management_url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| 1 | production |" in done.stdout and "| 2 | archived |" in done.stdout
    assert versions.default() == "1" and answer(server)[0]["model_version"] == "1"
    again = subprocess.run([sys.executable, "-m", "model.lifecycle.registry", "--config", str(params), "promote", "7"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "no version 7" in again.stderr
