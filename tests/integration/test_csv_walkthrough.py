"""docs/data.md's "Bring your own CSV", run as written: the commands of its fenced blocks, in a
copy of the checkout, on a CSV the test makes in the shape the page shows; the served answer
must carry the fields the page shows, and the default pipeline's outputs stay untouched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.torchserve import running, torchserve_command
from model.config import ROOT
from tests.integration.test_bring_your_own_csv import machine_failures

PAGE = ROOT / "docs" / "data.md"
SECTION = PAGE.read_text().split("### Bring your own CSV", 1)[1].split("\n## ", 1)[0]
FENCED = re.compile(r"```(\w+)\n(.*?)```", re.S)
BLOCKS = [(kind, body.replace("\\\n", " ").strip()) for kind, body in FENCED.findall(SECTION)]
VENV = Path(sys.executable).parent.parent


def commands(kind: str) -> list[str]:
    return [line for block_kind, body in BLOCKS if block_kind == kind for line in body.splitlines()]


def checkout_copy(target: Path) -> Path:
    """The checkout's files (committed or not, ignored ones left out) in a git repository of their
    own, with the project's venv; its requirements.txt no newer than the venv, so `make` keeps it."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(VENV, target_is_directory=True)
    installed = (VENV / ".installed").stat().st_mtime
    os.utime(target / "requirements.txt", (installed - 60, installed - 60))
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "checkout"],
    ):
        subprocess.run(["git", *command], cwd=target, check=True)
    return target


def shell(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """The copy after the page's draft commands, with the CSV the page describes."""
    copy = checkout_copy(tmp_path_factory.mktemp("walkthrough"))
    header = commands("text")[0].split(",")
    frame = machine_failures()
    assert list(frame.columns) == header, "the page shows the columns of the CSV the test makes"
    frame.to_csv(copy / "readings.csv", index=False)
    outputs = []
    for command in commands("bash"):
        if command.startswith(("make run", "curl")):
            continue
        done = shell(command, copy)
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stderr)
    return copy, outputs


def test_the_draft_finds_the_columns_the_page_names(walkthrough):
    copy, outputs = walkthrough
    drafted = yaml.safe_load((copy / "configs" / "readings.yaml").read_text())
    assert drafted["data"]["csv"] == {"path": "readings.csv", "time_column": "ts", "target_column": "failed"}
    assert drafted["model"]["name"] == "readings"
    assert set(drafted["features"]["categorical"]) == {"machine_type", "site"}
    assert set(drafted["features"]["numeric"]) == {"temperature_c", "vibration", "load_pct"}
    assert "time column:   ts" in outputs[0] and "target column: failed" in outputs[0]


def test_make_run_with_the_drafted_config_serves_the_answer_the_page_shows(walkthrough, tmp_path):
    copy, _ = walkthrough
    (run,) = [command for command in commands("bash") if command.startswith("make run")]
    (curl,) = [command for command in commands("bash") if command.startswith("curl")]
    shown = json.loads(re.sub(r"\.\.\.", "null", commands("json")[0]).replace('"1.0-null"', '"1.0-"'))
    _, env, ports, _ = torchserve_command(copy / "unused", tmp_path / "server")
    env = {key: value for key, value in env.items() if key != "TS_MODEL_STORE"}  # make sets the config's own
    name = yaml.safe_load((copy / "configs" / "readings.yaml").read_text())["model"]["name"]
    with running(["bash", "-c", run], env, tmp_path / "server", ports, model=name, timeout=900, cwd=copy) as server:
        answered = shell(curl.replace("http://localhost:8080", server.inference_url), copy)
    assert answered.returncode == 0, answered.stderr
    answer = json.loads(answered.stdout)
    assert set(answer) == set(shown)
    assert 0 <= answer["failed_probability"] <= 1 and isinstance(answer["failed"], bool)
    assert answer["model_version"].startswith(shown["model_version"])
    # Its own outputs only: the default pipeline's model, store and lock are not there.
    assert (copy / "artifacts" / "readings" / "model-store" / f"{name}.mar").is_file()
    assert not (copy / "model-store").exists() and not (copy / "artifacts" / "model").exists()
    assert (copy / "dvc.lock").read_bytes() == (ROOT / "dvc.lock").read_bytes()
    lock = yaml.safe_load((copy / "pipelines" / "readings" / "dvc.lock").read_text())
    assert {"prepare", "validate", "train", "export", "archive"} <= set(lock["stages"])
    assert lock["stages"]["archive"]["outs"][0]["path"] == f"artifacts/readings/model-store/{name}.mar"
    # A second time, DVC finds every stage up to date and trains nothing.
    again = shell(run.replace("make run", "make archive"), copy)
    assert again.returncode == 0 and "Running stage" not in again.stdout + again.stderr
    assert "Data and pipelines are up to date" in again.stdout + again.stderr


def test_make_refuses_a_config_that_would_overwrite_the_default_outputs(walkthrough):
    copy, _ = walkthrough
    clashing = copy / "configs" / "clash.yaml"
    clashing.write_text("base: readings.yaml\npaths: {model_dir: artifacts/model}\n")
    done = shell("make archive CONFIG=configs/clash.yaml", copy)
    assert done.returncode != 0
    assert "paths model_dir are (or overlap) the default pipeline's" in done.stderr
