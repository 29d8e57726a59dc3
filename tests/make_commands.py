"""A documented `make` target run as it is written, against a test's own params file: the command
lines `make -n` prints for the target, with `--config params.yaml` pointed at that file."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from model.config import ROOT

PROJECT_PARAMS = "--config params.yaml"


def make_command(target: str, config: Path, **variables: str) -> str:
    """The target's own command line (its prerequisites' left out), reading `config`."""
    printed = subprocess.run(
        ["make", "-n", "-s", target, *(f"{name}={value}" for name, value in variables.items())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [line for line in printed.splitlines() if PROJECT_PARAMS in line]
    return line.replace(PROJECT_PARAMS, f"--config {shlex.quote(str(config))}")


def run_make_target(target: str, config: Path, timeout: float = 600, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", make_command(target, config, **variables)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
