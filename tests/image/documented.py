"""The container commands the README and docs/docker-and-kubernetes.md tell a user to type, read from
those pages and run as they stand: in a copy of the checkout's tracked files (no artifacts/, no
build output), with `docker` standing in through podman and buildah where no Docker engine answers
(tests/image/bin/docker). Only what must differ on a shared machine is rewritten: the host side of
each published port (a free one) and the container's name (one per run)."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness import container
from model.config import ROOT
from model.lifecycle.ports import free_ports

README = ROOT / "README.md"
DOCKER_PAGE = ROOT / "docs" / "docker-and-kubernetes.md"
SHIM = Path(__file__).parent / "bin"
CONTAINER_NAME = "mymodel"


def bash_blocks(page: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", page.read_text(), re.M | re.S)


def block_with(page: Path, command: str) -> str:
    """The page's bash block in which `command` starts a line."""
    (block,) = [block for block in bash_blocks(page) if re.search(rf"^{re.escape(command)}", block, re.M)]
    return block


def build_commands(page: Path) -> list[str]:
    return re.findall(r"^docker build .*$", page.read_text(), re.M)


def tracked_files_copy(destination: Path) -> Path:
    """The checkout as `git clone` plus the working copy's edits would give it: every tracked file,
    as it is on disk now (uncommitted edits included, so the tests try what is about to be
    committed), and nothing untracked or ignored (artifacts/, model-store/, data/, .venv)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    names = [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]
    archive = destination.with_suffix(".tar")
    with tarfile.open(archive, "w") as packed:
        for name in names:
            packed.add(ROOT / name, arcname=name, recursive=False)
    destination.mkdir(parents=True)
    with tarfile.open(archive) as packed:
        packed.extractall(destination, filter="tar")
    archive.unlink()
    return destination


def shell_env() -> dict[str, str]:
    """The user's shell: `docker` is the engine's, or the podman stand-in."""
    env = dict(os.environ)
    if container.engine() == "podman":
        env["PATH"] = f"{SHIM}{os.pathsep}{env['PATH']}"
    return env


@dataclass
class Typed:
    script: str
    ports: dict[int, int]  # the documented host port -> the one used here
    name: str


def as_typed_here(block: str) -> Typed:
    """The block with each published host port moved to a free one (in `-p H:C` and in
    localhost:H URLs alike) and the container named for this run."""
    documented = sorted({int(port) for port in re.findall(r"-p (\d+):\d+", block)})
    ports = dict(zip(documented, free_ports(len(documented))))
    script = re.sub(r"-p (\d+):(\d+)", lambda m: f"-p {ports[int(m[1])]}:{m[2]}", block)
    script = re.sub(r"localhost:(\d+)", lambda m: f"localhost:{ports.get(int(m[1]), int(m[1]))}", script)
    name = f"{CONTAINER_NAME}-{uuid.uuid4().hex[:8]}"
    script = re.sub(rf"(?<![\w/.-]){CONTAINER_NAME}(?![\w/.-])", name, script)
    return Typed(script, ports, name)


def run(script: str, cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.monotonic() - began
