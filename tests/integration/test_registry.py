"""The model registry: versions side by side in a real TorchServe, promotion and rollback through
the management API while requests keep being answered and nothing restarts; and the rules that
keep the server to what the registry says: promotion only after a passed canary (or a recorded
override), one registration at a time, one production row held by the schema, and archives
checked against their SHA-256 before anything serves them."""

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file

from model.artifact.archive import build_archive
from model.config import DEFAULT_CONFIG, ROOT
from model.data.fingerprint import file_hash
from model.lifecycle.registry import (
    ARCHIVED,
    CANARY,
    CANDIDATE,
    DATABASE,
    PRODUCTION,
    SCHEMA_VERSION,
    Registry,
    RegistryError,
    file_sha256,
)
from model.lifecycle.release import deploy, ensure_loaded, promote, rollback
from model.training.weights import CONFIG, WEIGHTS
from tests.make_commands import run_make_target

SAMPLE = [json.loads((DEFAULT_CONFIG.parent / "sample_input.json").read_text())]  # a list in, a list out
FIRST = "the first production version: there is nothing to canary it against"


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


def passed_canary(registry, version, against):
    """The event model/lifecycle/canary.py records for a candidate that passed (its own tests run one)."""
    registry.record(version, CANARY, {"passed": True, "against": against, "reasons": ["as good as production"]})


@pytest.fixture(scope="module")
def registry(settings, metrics, tmp_path_factory):
    work = tmp_path_factory.mktemp("registry")
    registry = Registry(work / "registry", work / "model-store", settings.model.name)
    record = {"data_hash": "0" * 32, "params": {"seed": settings.seed}}
    registry.register(settings.paths.model_dir, metrics={"test": metrics["test"]}, note="trained", **record)
    registry.promote(1, force=FIRST)
    registry.register(
        shifted_model(settings.paths.model_dir, work / "shifted", 1.5), metrics={}, note="shifted", **record
    )
    return registry


def params_file(registry, folder, **paths):
    """A params file for the project's commands, pointed at this registry."""
    params = folder / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "base": str(DEFAULT_CONFIG),
                "paths": {
                    "registry": str(registry.root),
                    "model_store": str(registry.model_store),
                    **{key: str(value) for key, value in paths.items()},
                },
            }
        )
    )
    return params


def nothing_listening() -> str:
    """A management URL where no server answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


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
    # Each archive's SHA-256 is recorded at registration; the first production came by a recorded override.
    for version in (first, second):
        assert version.sha256 == file_sha256(registry.archive_path(version.version))
    assert first.sha256 != second.sha256
    assert [e.event for e in registry.events(1)] == ["registered", "promoted"]
    assert registry.events(1)[-1].detail["override"] == {
        "reason": FIRST,
        "refused": "version 1 has not passed a canary",
    }


def test_versions_are_served_side_by_side_and_promoted_and_rolled_back_without_restart(registry, served):
    server, versions = served
    deploy(registry, versions)  # production default, the candidate loaded beside it
    assert set(versions.loaded()) == {"1", "2"} and versions.default() == "1"
    one, two = answer(server, "1")[0], answer(server, "2")[0]
    assert (one["model_version"], two["model_version"]) == ("1", "2")
    assert two["late_probability"] > one["late_probability"]  # the shifted bias
    assert answer(server)[0]["model_version"] == "1"

    with pytest.raises(RegistryError, match="version 2 has not passed a canary"):
        promote(registry, 2, versions)  # refused before the server is touched
    assert versions.default() == "1" and registry.get(2).status == CANDIDATE

    passed_canary(registry, 2, against=1)
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
    assert [e.event for e in registry.events(2)] == ["registered", "canary", "promoted", "rolled back"]
    archive = registry.archive_path(2).read_bytes()
    deploy(registry, versions)  # the archived version leaves the server, its archive stays in the store
    assert set(versions.loaded()) == {"1"}
    assert registry.archive_path(2).read_bytes() == archive


def test_a_changed_archive_is_refused_before_any_server_sees_it(registry, served, tmp_path):
    server, versions = served
    path = registry.archive_path(2)
    registered, recorded = path.read_bytes(), registry.get(2).sha256
    middle = len(registered) // 2
    path.write_bytes(registered[:middle] + bytes([registered[middle] ^ 0xFF]) + registered[middle + 1 :])
    found = file_sha256(path)
    params = params_file(registry, tmp_path)
    try:
        for attempt in (
            lambda: promote(registry, 2, versions, force="an override does not cover a changed file"),
            lambda: ensure_loaded(registry, versions, registry.get(2), 1),
        ):
            with pytest.raises(RegistryError) as refused:
                attempt()
            assert "version 2" in str(refused.value) and recorded in str(refused.value) and found in str(refused.value)
        assert versions.default() == "1" and set(versions.loaded()) == {"1"}
        assert registry.get(2).status == ARCHIVED

        done = run_make_target("promote", params, VERSION="2", FORCE="restore it", MANAGEMENT=server.management_url)
        assert done.returncode == 1 and recorded in done.stderr and found in done.stderr, done.stderr[-2000:]
        checked = subprocess.run(
            [sys.executable, "-m", "model.lifecycle.release", "--config", str(params), "verify", "2"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert checked.returncode == 1 and found in checked.stderr
    finally:
        path.write_bytes(registered)
    checked = subprocess.run(
        [sys.executable, "-m", "model.lifecycle.release", "--config", str(params), "verify"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert checked.returncode == 0 and "version 1" in checked.stdout and registry.get(1).sha256 in checked.stdout
    assert registry.verified_archive(2) == path


def test_promotion_needs_a_passed_canary_against_production_or_a_recorded_override(settings, tmp_path):
    registry = Registry(tmp_path / "registry", tmp_path / "store", settings.model.name)
    for _ in range(3):
        registry.register(settings.paths.model_dir, data_hash="1" * 32, params={}, metrics={})

    with pytest.raises(RegistryError, match="version 1 has not passed a canary.*--force"):
        registry.promote(1)
    registry.promote(1, force=FIRST)

    registry.record(2, CANARY, {"passed": False, "against": 1})
    with pytest.raises(RegistryError, match="version 2 failed its canary"):
        registry.promote(2)
    passed_canary(registry, 2, against=1)
    registry.promote(2)
    assert (registry.get(1).status, registry.get(2).status) == (ARCHIVED, PRODUCTION)
    assert "override" not in registry.events(2)[-1].detail

    with pytest.raises(RegistryError, match=r"version 1 is archived \(superseded\), not a candidate"):
        registry.promote(1)
    passed_canary(registry, 3, against=1)  # a canary against a production that has moved on
    with pytest.raises(RegistryError, match="passed its canary against version 1, production is version 2 now"):
        registry.promote(3)
    registry.reject(3, {"canary": ["worse"]})
    with pytest.raises(RegistryError, match=r"version 3 is archived \(rejected\), not a candidate"):
        registry.promote(3)

    # The command line refuses the same before it calls a server, and says how to override.
    params = params_file(registry, tmp_path)
    refused = run_make_target("promote", params, VERSION="3", MANAGEMENT=nothing_listening())
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "version 3 is archived (rejected)" in refused.stderr and "--force" in refused.stderr
    # With an override it goes on to the server; when the server cannot be reached, the registry is unchanged.
    unreachable = run_make_target(
        "promote", params, VERSION="3", FORCE="a known false alarm in the canary", MANAGEMENT=nothing_listening()
    )
    assert unreachable.returncode != 0 and registry.production().version == 2

    registry.promote(3, force="a known false alarm in the canary")
    assert registry.production().version == 3
    assert registry.events(3)[-1].detail["override"] == {
        "reason": "a known false alarm in the canary",
        "refused": "version 3 is archived (rejected), not a candidate",
    }


def test_the_schema_holds_one_production_version(registry):
    assert registry.production().version == 1
    with sqlite3.connect(registry.root / DATABASE) as db, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute("UPDATE versions SET status = 'production' WHERE version = 2")
    assert [v.status for v in registry.versions()].count(PRODUCTION) == 1


# The registry's schema before archive hashes and the one-production index.
LEGACY_SCHEMA = """
CREATE TABLE versions (
    version INTEGER PRIMARY KEY, model_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('candidate', 'production', 'archived')),
    created TEXT NOT NULL, data_hash TEXT NOT NULL, params TEXT NOT NULL, metrics TEXT NOT NULL,
    archive TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL REFERENCES versions(version),
    at TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');
"""


def test_a_registry_written_before_hashes_is_migrated(tmp_path):
    root, store = tmp_path / "registry", tmp_path / "store"
    root.mkdir()
    store.mkdir()
    with sqlite3.connect(root / DATABASE) as db:
        db.executescript(LEGACY_SCHEMA)
        # Two production rows, as two promotions at once could leave them; version 3's archive is gone.
        for version, status in ((1, PRODUCTION), (2, PRODUCTION), (3, CANDIDATE)):
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, '{}', '{}', ?, '')",
                (version, f"1.0-{version}", status, "2013-01-01", "0" * 32, f"mymodel-v{version}.mar"),
            )
        for version in (1, 2):
            (store / f"mymodel-v{version}.mar").write_bytes(f"archive {version}".encode())
            db.execute("INSERT INTO events (version, at, event) VALUES (?, '2013-01-02', 'promoted')", (version,))

    registry = Registry(root, store, "mymodel")
    assert registry.production().version == 2  # the one promoted last
    assert registry.get(1).status == ARCHIVED and registry.events(1)[-1].event == "superseded"
    for version in (1, 2):
        assert registry.get(version).sha256 == file_sha256(store / f"mymodel-v{version}.mar")
        assert "hash recorded" in [e.event for e in registry.events(version)]
        assert registry.verified_archive(version).exists()
    assert registry.get(3).sha256 == ""
    with pytest.raises(RegistryError, match="version 3 has no recorded SHA-256"):
        registry.verified_archive(3)
    with sqlite3.connect(root / DATABASE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE versions SET status = 'production' WHERE version = 1")
    events = len(registry.events())
    assert len(Registry(root, store, "mymodel").events()) == events  # opened again: nothing more to do


REGISTER = """
import json, sys, time
from pathlib import Path
from model.lifecycle.registry import Registry
root, store, model_dir, go = map(Path, sys.argv[1:5])
registry = Registry(root, store, "mymodel")
print("ready", flush=True)
deadline = time.monotonic() + 300
while not go.exists():  # both processes start registering at the same moment
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.005)
record = registry.register(model_dir, data_hash="2" * 32, params={}, metrics={}, note=str(model_dir))
print(json.dumps({"version": record.version, "model_id": record.model_id}), flush=True)
"""


def test_two_registrations_at_once_each_get_their_own_version_and_archive(settings, tmp_path):
    root, store, go = tmp_path / "registry", tmp_path / "store", tmp_path / "go"
    models = [settings.paths.model_dir, shifted_model(settings.paths.model_dir, tmp_path / "shifted", 0.5)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, str(root), str(store), str(model), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in models
    ]
    try:
        assert [process.stdout.readline().strip() for process in processes] == ["ready", "ready"]
        go.touch()
        outputs = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    registered = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert sorted(r["version"] for r in registered) == [1, 2]

    registry = Registry(root, store, "mymodel")
    for mine in registered:
        row = registry.get(mine["version"])
        assert row.model_id == mine["model_id"]
        weights = registry.weights_dir(row.version)
        assert json.loads((weights / CONFIG).read_text())["model_id"] == row.model_id
        # The archive under the row's name is this row's model: packing its weights again gives the same bytes.
        repacked = build_archive(weights, tmp_path / f"repacked-{row.version}")
        assert row.sha256 == file_sha256(registry.archive_path(row.version)) == file_sha256(repacked)
    assert registry.get(1).sha256 != registry.get(2).sha256


def test_rollback_needs_a_previous_production(tmp_path, settings, metrics):
    registry = Registry(tmp_path / "registry", tmp_path / "store", settings.model.name)
    registry.register(settings.paths.model_dir, data_hash="1" * 32, params={}, metrics={})
    with pytest.raises(RegistryError, match="no production"):
        registry.rollback()
    registry.promote(1, force=FIRST)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    with pytest.raises(RegistryError, match="not a candidate"):
        registry.reject(1)


def test_the_documented_commands(registry, served, settings, table, tmp_path):
    """docs/lifecycle.md's registry commands, as written there, against this registry and server."""
    server, versions = served
    processed = tmp_path / "table.parquet"
    table.to_parquet(processed)
    params = params_file(
        registry, tmp_path, model_dir=settings.paths.model_dir, metrics=settings.paths.metrics, processed=processed
    )
    management = {"MANAGEMENT": server.management_url}

    registered = run_make_target("register", params)
    assert registered.returncode == 0, registered.stderr[-2000:]
    new = json.loads(registered.stdout[: registered.stdout.index("\n}") + 2])
    assert new["version"] == 3 and new["status"] == CANDIDATE and new["data_hash"] == file_hash(processed)

    listed = run_make_target("registry", params)
    assert listed.returncode == 0, listed.stderr[-2000:]
    for version, status in ((1, PRODUCTION), (2, ARCHIVED), (3, CANDIDATE)):
        assert f"| {version} | {status} |" in listed.stdout
        assert registry.get(version).sha256[:12] in listed.stdout

    refused = run_make_target("promote", params, VERSION="2", **management)
    assert refused.returncode == 1 and "archived (rolled back)" in refused.stderr and "--force" in refused.stderr
    assert versions.default() == "1"
    forced = run_make_target(
        "promote", params, VERSION="2", FORCE="back to the shifted model while 3 is checked", **management
    )
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "| 2 | production |" in forced.stdout and versions.default() == "2"
    assert registry.events(2)[-1].detail["override"]["reason"] == "back to the shifted model while 3 is checked"

    rolled = run_make_target("rollback", params, **management)
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert "| 1 | production |" in rolled.stdout and "| 2 | archived |" in rolled.stdout
    assert versions.default() == "1" and answer(server)[0]["model_version"] == "1"

    missing = run_make_target("promote", params, VERSION="7", **management)
    assert missing.returncode == 1 and "no version 7" in missing.stderr

    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "model.lifecycle.release",
            "--config",
            str(params),
            "deploy",
            "--management",
            server.management_url,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    assert set(versions.loaded()) == {"1", "3"} and versions.default() == "1"
    curl = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{server.inference_url}/predictions/mymodel/3",
            "-H",
            "Content-Type: application/json",
            "-T",
            "sample_input.json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert json.loads(curl.stdout)["model_version"] == "3"
