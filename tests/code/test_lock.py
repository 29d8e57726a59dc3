"""The committed dvc.lock describes the code and parameters in the tree: a stage recorded against
older code or other parameters claims results the current code did not produce."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.config import ROOT

DVC = Path(sys.executable).parent / "dvc"


def stage_outputs(lock: dict) -> set[str]:
    return {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def stale_records(repo: Path) -> dict[str, dict]:
    """Per stage, the recorded deps (files, folders, params) that differ from the tree, leaving out
    other stages' outputs (data and models a checkout need not hold: `dvc pull` brings them)."""
    done = subprocess.run([DVC, "status", "--json"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    outputs = stage_outputs(yaml.safe_load((repo / "dvc.lock").read_text()))
    stale = {}
    for stage, entries in json.loads(done.stdout or "{}").items():
        for entry in entries:
            changed = entry.get("changed deps", {}) if isinstance(entry, dict) else {}
            ours = {
                dep: change
                for dep, change in changed.items()
                if not any(dep == out or dep.startswith(out.rstrip("/") + "/") for out in outputs)
            }
            if ours:
                stale.setdefault(stage, {}).update(ours)
    return stale


@pytest.mark.slow  # runs `dvc status` over the tree
def test_the_committed_lock_records_the_code_and_params_in_the_tree():
    stale = stale_records(ROOT)
    assert not stale, f"dvc.lock is older than the tree (run `.venv/bin/dvc repro` and commit dvc.lock): {stale}"


@pytest.mark.slow  # runs `dvc status` over a copy of the tree
def test_the_check_sees_a_stage_recorded_against_older_code(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):  # the tree as it is now, committed or not
        shutil.copyfile(ROOT / name, clone / name)
    for path in ("model", "handler"):
        shutil.rmtree(clone / path)
        shutil.copytree(ROOT / path, clone / path, ignore=shutil.ignore_patterns("__pycache__"))
    assert stale_records(clone) == stale_records(ROOT)
    network = clone / "model" / "training" / "network.py"
    network.write_text(network.read_text() + "\n# changed\n")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["seed"] += 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = stale_records(clone)
    assert stale["train"]["model/training/network.py"] == "modified"
    assert "seed" in json.dumps(stale["train"])
