"""Canary releases against a real TorchServe: the router's split, promotion of a candidate that is
not worse, automatic rollback of one that is."""

import json
import shutil
import subprocess
import sys

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file

from model.config import DEFAULT_CONFIG
from model.data.split import split_rows
from model.lifecycle.canary import run_canary
from model.lifecycle.canary_router import Router, routing
from model.lifecycle.canary_verdict import judge
from model.lifecycle.torchserve import torchserve
from model.lifecycle.torchserve_versions import TorchServeVersions
from model.lifecycle.versions import ARCHIVED, PRODUCTION, Registry
from model.training.weights import CONFIG, WEIGHTS

SAMPLE = json.loads((DEFAULT_CONFIG.parent / "sample_input.json").read_text())


def inverted_model(model_dir, target):
    """A worse model: the output layer negated, so it ranks late flights as on time."""
    shutil.copytree(model_dir, target)
    weights = load_file(str(target / WEIGHTS))
    output = sorted(name for name in weights if name.endswith(".bias"))[-1].rsplit(".", 1)[0]
    for part in ("weight", "bias"):
        weights[f"{output}.{part}"] = -weights[f"{output}.{part}"]
    save_file(weights, str(target / WEIGHTS))
    config = json.loads((target / CONFIG).read_text())
    (target / CONFIG).write_text(json.dumps({**config, "version": config["version"] + "-inverted"}))
    return target


@pytest.fixture(scope="module")
def canary_settings(settings):
    return settings.with_overrides({"canary": {"share": 0.3, "requests": 300, "concurrency": 4}})


@pytest.fixture(scope="module")
def registry(settings, metrics, tmp_path_factory):
    work = tmp_path_factory.mktemp("canary")
    registry = Registry(work / "registry", work / "model-store", settings.model.name)
    record = {"data_hash": "0" * 32, "params": {}, "metrics": {}}
    registry.register(settings.paths.model_dir, note="production", **record)
    registry.promote(1)
    registry.register(settings.paths.model_dir, note="the same weights again", **record)
    registry.register(inverted_model(settings.paths.model_dir, work / "inverted"), note="inverted", **record)
    return registry


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory):
    with torchserve(registry.model_store, tmp_path_factory.mktemp("canary-torchserve"),
                    extra_env={"TS_LOAD_MODELS": registry.get(1).archive}) as server:
        yield server, TorchServeVersions(server.management_url, registry.name)


@pytest.fixture(scope="module")
def labelled(table):
    return split_rows(table, "test").sample(1500, random_state=3)


def test_the_router_splits_traffic_by_share_and_names_the_version(registry, served):
    server, versions = served
    versions.load(registry.get(2).archive, 1)
    try:
        router = Router(server.inference_url, "mymodel", "1", "2", share=0.25, seed=11)
        with routing(router) as url:
            replies = [requests.post(f"{url}/predictions/mymodel", json=SAMPLE, timeout=30) for _ in range(400)]
            bad = requests.post(f"{url}/predictions/mymodel", data=b"{", timeout=30,
                                headers={"Content-Type": "application/json"})
            summary = requests.get(f"{url}/canary", timeout=10).json()
        assert {r.status_code for r in replies} == {200}
        assert all(r.headers["X-Model-Version"] == r.json()["model_version"] for r in replies)
        to_candidate = sum(r.headers["X-Model-Version"] == "2" for r in replies)
        assert 70 <= to_candidate <= 130  # 100 expected; binomial sd 8.7
        assert bad.status_code == 400 and "error" in bad.json()  # errors pass through unchanged
        seen = summary["versions"]
        assert seen["2"]["requests"] + seen["1"]["requests"] == 401
        assert seen["1"]["p95_ms"] > 0 and seen["2"]["errors"] == 0
    finally:
        versions.unload("2")


def test_a_candidate_no_worse_than_production_is_promoted(canary_settings, registry, served, labelled):
    server, versions = served
    verdict = run_canary(canary_settings, registry, 2, server.inference_url, versions, labelled)
    assert verdict.promoted, verdict.reasons
    assert abs(verdict.roc_auc["2"] - verdict.roc_auc["1"]) < 1e-6  # the same weights
    assert verdict.traffic["versions"]["2"]["requests"] > 50
    assert registry.get(2).status == PRODUCTION and registry.get(1).status == ARCHIVED
    assert versions.default() == "2"
    assert [e.event for e in registry.events(2)][-2:] == ["canary", "promoted"]


def test_a_worse_candidate_is_rolled_back_automatically(canary_settings, registry, served, labelled):
    server, versions = served
    verdict = run_canary(canary_settings, registry, 3, server.inference_url, versions, labelled)
    assert not verdict.promoted
    assert verdict.roc_auc["3"] < verdict.roc_auc["2"] - 0.05
    assert any("worse" in reason for reason in verdict.reasons)
    assert registry.get(3).status == ARCHIVED and registry.get(2).status == PRODUCTION
    assert versions.default() == "2" and "3" not in versions.loaded()
    assert [e.event for e in registry.events(3)][-2:] == ["canary", "rejected"]
    reply = requests.post(f"{server.inference_url}/predictions/mymodel", json=SAMPLE, timeout=30)
    assert reply.status_code == 200 and reply.json()["model_version"] == "2"


def test_latency_and_errors_count_as_much_as_the_metric(canary_settings):
    traffic = {"production": "1", "candidate": "2", "versions": {
        "1": {"requests": 900, "p95_ms": 10.0, "error_share": 0.0},
        "2": {"requests": 100, "p95_ms": 30.0, "error_share": 0.0}}}
    passed, reasons = judge(canary_settings, traffic, {"1": 0.7, "2": 0.71})
    assert not passed and any("slower" in reason for reason in reasons)
    traffic["versions"]["2"].update(p95_ms=12.0, error_share=0.02)
    passed, reasons = judge(canary_settings, traffic, {"1": 0.7, "2": 0.71})
    assert not passed and any("more errors" in reason for reason in reasons)
    traffic["versions"]["2"].update(error_share=0.0)
    assert judge(canary_settings, traffic, {"1": 0.7, "2": 0.696})[0]  # within the tolerance


def test_the_command_line_runs_a_canary(registry, served, labelled, tmp_path):
    server, _ = served
    registry.register(registry.weights_dir(2), data_hash="2" * 32, params={}, metrics={}, note="retrained")
    data = tmp_path / "recent.parquet"
    labelled.to_parquet(data)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": str(DEFAULT_CONFIG), "canary": {"requests": 200, "share": 0.3},
                                      "paths": {"registry": str(registry.root),
                                                "model_store": str(registry.model_store)}}))
    done = subprocess.run([sys.executable, "-m", "model.lifecycle.canary", "--config", str(params), "run",
                           "--candidate", "4",
                           "--inference", server.inference_url, "--management", server.management_url,
                           "--data", str(data)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    verdict = json.loads(done.stdout)
    assert verdict["candidate"] == "4" and verdict["promoted"] is True
    assert registry.get(4).status == PRODUCTION
