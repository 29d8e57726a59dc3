"""Canary releases against a real TorchServe: the router's split, promotion of a candidate that is
not worse (the canary is the gate the registry asks of a promotion), automatic rollback of one
that is, and the documented commands."""

import json
import shutil
import subprocess
import sys
import time

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file

from model.config import DEFAULT_CONFIG, ROOT
from model.data.split import split_rows
from model.lifecycle.canary import run_canary
from model.lifecycle.canary_router import Router, routing
from model.lifecycle.canary_verdict import judge
from model.lifecycle.ports import free_ports
from model.lifecycle.registry import ARCHIVED, CANARY, PRODUCTION, Registry, RegistryError
from model.lifecycle.release import ensure_loaded
from model.training.weights import CONFIG, WEIGHTS
from tests.make_commands import run_make_target

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
    registry.promote(1, force="the first production version: there is nothing to canary it against")
    registry.register(settings.paths.model_dir, note="the same weights again", **record)
    registry.register(inverted_model(settings.paths.model_dir, work / "inverted"), note="inverted", **record)
    return registry


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
            bad = requests.post(
                f"{url}/predictions/mymodel", data=b"{", timeout=30, headers={"Content-Type": "application/json"}
            )
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
    canary = registry.events(2)[-2].detail
    assert canary["passed"] is True and canary["against"] == 1 and canary["reasons"] == verdict.reasons
    assert "override" not in registry.events(2)[-1].detail  # the canary was the gate: no override needed


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
    assert registry.events(3)[-2].detail["passed"] is False
    # A rejected version is neither canaried again nor promoted without an override.
    with pytest.raises(RegistryError, match=r"version 3 is archived: only a candidate goes through a canary"):
        run_canary(canary_settings, registry, 3, server.inference_url, versions, labelled)
    with pytest.raises(RegistryError, match=r"version 3 is archived \(rejected\), not a candidate.*--force"):
        registry.promote(3)


def test_latency_and_errors_count_as_much_as_the_metric(canary_settings):
    traffic = {
        "production": "1",
        "candidate": "2",
        "versions": {
            "1": {"requests": 900, "p95_ms": 10.0, "error_share": 0.0},
            "2": {"requests": 100, "p95_ms": 30.0, "error_share": 0.0},
        },
    }
    passed, reasons = judge(canary_settings, traffic, {"1": 0.7, "2": 0.71})
    assert not passed and any("slower" in reason for reason in reasons)
    traffic["versions"]["2"].update(p95_ms=12.0, error_share=0.02)
    passed, reasons = judge(canary_settings, traffic, {"1": 0.7, "2": 0.71})
    assert not passed and any("more errors" in reason for reason in reasons)
    traffic["versions"]["2"].update(error_share=0.0)
    assert judge(canary_settings, traffic, {"1": 0.7, "2": 0.696})[0]  # within the tolerance
    traffic["versions"]["2"].update(p95_ms=None)  # every answer it gave was a 5xx: no latency to compare
    passed, reasons = judge(canary_settings, traffic, {"1": 0.7, "2": 0.71})
    assert not passed and any("slower" in reason for reason in reasons)


def canary_params(registry, labelled, folder):
    """A params file for the canary commands: this registry, a short replay, `labelled` as the pipeline's
    most recent labelled data."""
    processed = folder / "recent.parquet"
    labelled.to_parquet(processed)
    params = folder / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "base": str(DEFAULT_CONFIG),
                "canary": {"requests": 200, "share": 0.3},
                "paths": {
                    "registry": str(registry.root),
                    "processed": str(processed),
                    "model_store": str(registry.model_store),
                },
            }
        )
    )
    return params


def test_make_canary_runs_a_canary(registry, served, labelled, tmp_path):
    server, _ = served
    registry.register(registry.weights_dir(2), data_hash="2" * 32, params={}, metrics={}, note="retrained")
    done = run_make_target(
        "canary",
        canary_params(registry, labelled, tmp_path),
        VERSION="4",
        INFERENCE=server.inference_url,
        MANAGEMENT=server.management_url,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verdict = json.loads(done.stdout)
    assert verdict["candidate"] == "4" and verdict["promoted"] is True
    assert registry.get(4).status == PRODUCTION
    assert [e.event for e in registry.events(4)] == ["registered", CANARY, "promoted"]


def test_the_router_alone_serves_live_clients(registry, served, labelled, tmp_path):
    """docs/lifecycle.md's `python -m model.lifecycle.canary route --candidate N --port P`."""
    server, versions = served
    candidate = registry.register(registry.weights_dir(2), data_hash="2" * 32, params={}, metrics={}, note="again")
    ensure_loaded(registry, versions, candidate, 1)
    (port,) = free_ports(1)
    router = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model.lifecycle.canary",
            "--config",
            str(canary_params(registry, labelled, tmp_path)),
            "route",
            "--candidate",
            str(candidate.version),
            "--inference",
            server.inference_url,
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert router.poll() is None, router.communicate()[1][-2000:]
            try:
                summary = requests.get(f"http://127.0.0.1:{port}/canary", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the router never answered"
                time.sleep(0.2)
        assert summary.status_code == 200
        replies = [
            requests.post(f"http://127.0.0.1:{port}/predictions/mymodel", json=SAMPLE, timeout=30) for _ in range(60)
        ]
    finally:
        router.terminate()
        router.communicate(timeout=60)
    assert {reply.status_code for reply in replies} == {200}
    assert {reply.headers["X-Model-Version"] for reply in replies} == {"4", str(candidate.version)}
    assert all(reply.headers["X-Model-Version"] == reply.json()["model_version"] for reply in replies)
