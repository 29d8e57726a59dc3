"""The DVC pipeline from a clone, on a small slice, run as `.venv/bin/dvc` from an unactivated
shell: repro, determinism, push/pull to the configured remote from a second clone, the same
through an S3-compatible server (moto), and switching back to an older model with git + dvc
checkout."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from model.config import ROOT
from model.lifecycle.ports import free_ports

SLICE = {
    "window": {"start": "2013-01-01", "end": "2013-03-01"},
    "split": {"valid_start": "2013-02-01", "test_start": "2013-02-15"},
}
STAGES = ["prepare", "validate", "train", "export", "evaluate", "archive"]
BEFORE = [
    ("prepare", "validate"),
    ("validate", "train"),
    ("train", "export"),
    ("export", "evaluate"),
    ("export", "archive"),
]


VENV_BIN = Path(sys.executable).parent


def run(*command, cwd, env=None):
    """As the docs tell a user: `.venv/bin/dvc ...` from a shell that never activated the venv
    (its bin is not on PATH), in a checkout whose .venv is the project's."""
    if command[0] == "dvc":
        venv = Path(cwd) / ".venv"
        if not venv.exists():
            venv.symlink_to(VENV_BIN.parent, target_is_directory=True)
        command = (str(venv / "bin" / "dvc"), *command[1:])
    path = os.pathsep.join(
        entry for entry in os.environ["PATH"].split(os.pathsep) if Path(entry).resolve() != VENV_BIN.resolve()
    )
    base = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        command, cwd=cwd, env={**base, **(env or {}), "PATH": path}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def git(*args, cwd):
    return run("git", "-c", "user.name=pipeline", "-c", "user.email=pipeline@localhost", *args, cwd=cwd)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def scores(repo: Path) -> dict:
    return json.loads((repo / "artifacts/metrics.json").read_text())


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    """Two sibling clones of this repository (they share the configured remote beside them)."""
    work = tmp_path_factory.mktemp("dvc")
    first = work / "first"
    git("clone", "-q", str(ROOT), str(first), cwd=work)
    params = yaml.safe_load((first / "params.yaml").read_text())
    params["data"].update(SLICE)
    params["train"].update(max_epochs=3, patience=1)
    (first / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work, first


@pytest.fixture(scope="module")
def reproduced(clones):
    work, first = clones
    log = run("dvc", "repro", "archive", "evaluate", cwd=first)
    git("commit", "-qam", "slice", cwd=first)
    return log


def test_repro_runs_every_stage_in_order(clones, reproduced):
    _, first = clones
    ran = [line.split("'")[1] for line in reproduced.splitlines() if line.startswith("Running stage")]
    assert sorted(ran) == sorted(STAGES)
    for before, after in BEFORE:  # each stage after the ones whose outputs it reads
        assert ran.index(before) < ran.index(after), ran
    assert (first / "data/raw/table.parquet").exists() and (first / "model-store/mymodel.mar").exists()
    assert "up to date" in run("dvc", "status", "archive", "evaluate", cwd=first).lower()


def test_metrics_and_plots_are_shown(clones, reproduced):
    _, first = clones
    shown = json.loads(run("dvc", "metrics", "show", "--json", cwd=first))
    files = next(iter(shown.values()))["data"]
    assert files["artifacts/metrics.json"]["data"]["test"]["roc_auc"] > 0.5
    plots = json.loads(run("dvc", "plots", "show", "--json", cwd=first))
    assert not plots.get("errors")
    drawn = {name: entries[0]["content"]["data"]["values"] for name, entries in plots["data"].items()}
    assert set(drawn) == {
        "ROC curve (test months)",
        "Calibration (test months)",
        "Training loss",
        "Validation ROC AUC per epoch",
    }
    assert len(drawn["Training loss"]) == json.loads((first / "artifacts/metrics.json").read_text())["epochs"]
    assert all(values for values in drawn.values())


def test_a_second_repro_gives_the_same_model_and_metrics(clones, reproduced):
    _, first = clones
    model, metrics = md5(first / "artifacts/export/model.pt"), scores(first)
    run("dvc", "repro", "--force", "--single-item", "train", cwd=first)
    run("dvc", "repro", "--force", "--single-item", "export", cwd=first)
    assert md5(first / "artifacts/export/model.pt") == model
    assert scores(first) == metrics
    assert "up to date" in run("dvc", "status", "archive", "evaluate", cwd=first).lower()  # the lock file still matches


def test_a_fresh_clone_pulls_data_and_model_from_the_remote(clones, reproduced):
    work, first = clones
    run("dvc", "push", cwd=first)
    assert (work / "mymodel-serve-dvc").is_dir()  # the configured remote, beside the clones
    second = work / "second"
    git("clone", "-q", str(first), str(second), cwd=work)
    run("dvc", "pull", cwd=second)
    for path in (
        "data/raw/table.parquet",
        "data/processed/table.parquet",
        "artifacts/export/model.pt",
        "artifacts/model/model.safetensors",
    ):
        assert md5(second / path) == md5(first / path), path
    assert "up to date" in run("dvc", "status", "archive", "evaluate", cwd=second).lower()
    assert "Running stage" not in run("dvc", "repro", "archive", "evaluate", cwd=second)


def test_git_checkout_and_dvc_checkout_bring_back_an_older_model(clones, reproduced):
    _, first = clones
    old_model, old_version = md5(first / "artifacts/export/model.pt"), scores(first)["model_version"]
    params = yaml.safe_load((first / "params.yaml").read_text())
    params["model"]["hidden"] = [32]
    (first / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("dvc", "repro", "export", cwd=first)
    git("commit", "-qam", "smaller network", cwd=first)
    new_model = md5(first / "artifacts/export/model.pt")
    assert new_model != old_model

    git("checkout", "-q", "HEAD~1", cwd=first)
    run("dvc", "checkout", cwd=first)
    assert md5(first / "artifacts/export/model.pt") == old_model
    assert json.loads((first / "artifacts/model/config.json").read_text())["version"] == old_version
    git("checkout", "-q", "-", cwd=first)
    run("dvc", "checkout", cwd=first)
    assert md5(first / "artifacts/export/model.pt") == new_model


@pytest.fixture
def s3_server(tmp_path):
    """A real S3-compatible server on a free loopback port (moto's), with the bucket the committed
    s3 remote names."""
    import boto3

    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "mymodel",
        "AWS_SECRET_ACCESS_KEY": "mymodel-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    bucket = re.search(r"url = s3://([^/\s]+)", (ROOT / ".dvc" / "config").read_text()).group(1)
    with open(tmp_path / "moto.log", "wb") as log:
        server = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    requests.get(endpoint, timeout=2)
                    break
                except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((tmp_path / "moto.log").read_text()) from None
                    time.sleep(0.2)
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
                region_name=credentials["AWS_DEFAULT_REGION"],
            ).create_bucket(Bucket=bucket)
            yield endpoint, credentials
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)


def use_s3(repo: Path, endpoint: str) -> None:
    """What the docs tell a user: the committed s3 remote, pointed at their server, as the default,
    all in .dvc/config.local (never committed)."""
    run("dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint, cwd=repo)
    run("dvc", "remote", "default", "--local", "s3", cwd=repo)


def test_a_clone_anywhere_pulls_from_an_s3_compatible_remote_and_has_nothing_to_rebuild(clones, reproduced, s3_server):
    work, first = clones
    endpoint, credentials = s3_server
    # whatever the tests before left checked out, its outputs up to date and committed
    run("dvc", "repro", "archive", "evaluate", cwd=first)
    git("commit", "-qam", "up to date", "--allow-empty", cwd=first)
    use_s3(first, endpoint)
    run("dvc", "push", cwd=first, env=credentials)
    elsewhere = work / "elsewhere" / "deeper"
    git("clone", "-q", str(first), str(elsewhere / "clone"), cwd=work)
    clone = elsewhere / "clone"
    assert not (clone / ".dvc" / "config.local").exists()  # nothing of the first clone's set-up is committed
    use_s3(clone, endpoint)
    run("dvc", "pull", cwd=clone, env=credentials)
    for path in (
        "data/processed/table.parquet",
        "artifacts/model/model.safetensors",
        "artifacts/export/model.pt",
        "model-store/mymodel.mar",
    ):
        assert md5(clone / path) == md5(first / path), path
    assert "Running stage" not in run("dvc", "repro", "archive", "evaluate", cwd=clone, env=credentials)
    # and the clone in another folder exports the same bytes from the pulled weights
    run("dvc", "repro", "--force", "--single-item", "export", cwd=clone)
    assert md5(clone / "artifacts/export/model.pt") == md5(first / "artifacts/export/model.pt")
