"""The Makefile's plumbing, read through `make -n` and `make help`: every target that reads a
params file takes CONFIG (the default pipeline unchanged without it), serving another params
file's model names its store and archive, and the help columns fit the longest target."""

from __future__ import annotations

import re
import subprocess

import pytest

from model.config import ROOT

CONFIG_TARGETS = ("data", "train", "evaluate", "report", "archive", "serve", "loadtest", "register", "bench")
OTHER = "configs/synthetic.yaml"


def dry_run(*arguments: str) -> str:
    """What make would run; prerequisites' recipes included, nothing executed."""
    done = subprocess.run(["make", "-n", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("target", CONFIG_TARGETS)
def test_each_target_that_reads_a_params_file_takes_config(target):
    other = dry_run(target, f"CONFIG={OTHER}")
    assert f"--config {OTHER}" in other
    assert "--config params.yaml" not in other and not re.search(r"^dvc repro", other, re.M)


@pytest.mark.parametrize("target", CONFIG_TARGETS)
def test_without_config_each_target_runs_the_default_pipeline(target):
    default = dry_run(target)
    assert OTHER not in default and "model.lifecycle.pipeline --config" not in default
    if target not in ("serve", "loadtest", "register", "bench"):
        assert re.search(rf"^dvc repro {target if target != 'data' else 'validate'}$", default, re.M)


def test_serving_another_params_files_model_uses_its_store_and_name():
    serve = dry_run("serve", f"CONFIG={OTHER}")
    setting = f".venv/bin/python -m model.lifecycle.pipeline --config {OTHER} --get"
    assert f'TS_MODEL_STORE="$({setting} paths.model_store)"' in serve
    assert "--get model.name).mar" in serve and serve.rstrip().endswith("docker/entrypoint.sh")
    assert "TS_MODEL_STORE" not in dry_run("serve")


def test_another_params_file_leaves_the_default_models_pages_alone():
    for target in ("loadtest", "bench"):
        assert "--doc" not in dry_run(target, f"CONFIG={OTHER}")
        assert "--doc docs/load-and-capacity.md" in dry_run(target)


def test_loadtest_against_a_running_server_needs_the_data_not_a_trained_model():
    against_url = dry_run("loadtest", "URL=http://127.0.0.1:9")
    assert "dvc repro validate" in against_url and "dvc repro archive" not in against_url
    assert "--url http://127.0.0.1:9" in against_url
    assert "dvc repro archive" in dry_run("loadtest")


def test_help_columns_fit_the_longest_target():
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = [re.match(r"^  (\S+)( +)(\S.*)$", line) for line in listed.splitlines()]
    assert rows and all(rows), listed
    longest = max(len(row.group(1)) for row in rows)
    assert {len(row.group(1)) + len(row.group(2)) for row in rows} == {longest + 2}
    assert longest == max(
        len(name) for name in re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "Makefile").read_text(), re.M)
    )


def test_draft_config_says_how_it_is_called():
    done = subprocess.run(
        ["make", "-o", ".venv/.installed", "draft-config"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "usage: make draft-config CSV=path/to/data.csv NAME=<name>" in done.stdout
