"""Both images, built once per session the way the README and docs/docker-and-kubernetes.md tell a
user to (`docker build ...` in a copy of the checkout's tracked files: no artifacts/, so each
build trains its model), then run the way a user runs them (docker run, or podman run where
there is no Docker engine), next to a native TorchServe serving what `make archive` trained.

Where no engine exists these tests say why and do not run; in CI (CI set) that is a failure,
since `make test` installs the container tools there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from harness import container
from harness.torchserve import Server, torchserve
from model.config import ROOT, Settings, load_settings
from tests.image import documented
from tests.tools import unavailable

REPORTS = ROOT / "reports" / "image"


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh checkout's files: what `git clone` of the working copy would give."""
    return documented.tracked_files_copy(tmp_path_factory.mktemp("checkout") / "mymodel-serve")


@pytest.fixture(scope="session")
def engine(checkout: Path, write_report) -> str:
    """The engine, once both images are built by the documented `docker build` commands."""
    try:
        name = container.engine()
    except container.NoEngine as error:
        unavailable(str(error))
    commands = documented.build_commands(documented.README) + documented.build_commands(documented.DOCKER_PAGE)
    tags = {re.search(r"-t (\S+)", command)[1] for command in commands}
    assert tags == {container.SERVE_IMAGE, container.OFFLINE_IMAGE}, (tags, "SERVE_IMAGE/OFFLINE_IMAGE differ")
    seconds = {}
    for command in dict.fromkeys(commands):
        built, seconds[command] = documented.run(command, checkout, timeout=7200)  # a first one builds the bases
        assert built.returncode == 0, f"{command}:\n{built.stdout[-3000:]}\n{built.stderr[-6000:]}"
    write_report(
        "build",
        {
            "engine": name,
            "seconds": {command: round(s) for command, s in seconds.items()},
            "sizes_mb": {tag: round(container.image_size_mb(tag)) for tag in sorted(tags)},
        },
    )
    return name


@pytest.fixture(scope="session")
def pipeline() -> Settings:
    """The pipeline's own settings: the images train what it trains."""
    return load_settings()


@pytest.fixture(scope="session")
def native(engine, pipeline: Settings, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """TorchServe on this machine (torch 2.13, Python 3.11) with the archive `make archive` packed
    from its own training run: the image trained the same weights in its build."""
    archive = pipeline.paths.model_store / "mymodel.mar"
    if not archive.exists():
        pytest.fail(f"{archive} is missing: `make image-test` (and `make test`) run `make archive` first")
    with torchserve(pipeline.paths.model_store, tmp_path_factory.mktemp("native"), plugins=ROOT / "plugins") as server:
        yield server


@pytest.fixture(scope="session")
def serving(engine):
    """mymodel-serve as `docker run -p 8080:8080 mymodel-serve` starts it (management published
    too, to show it is not reachable), with every HEALTHCHECK poll until it passed."""
    with container.started(
        publish=(container.INFERENCE, container.MANAGEMENT, container.METRICS, container.OIP), wait=False
    ) as started:
        polls = started.wait_healthy()
        yield started, polls


@pytest.fixture(scope="session")
def write_report():
    """Keep a measured fact for the docs: reports/image/<name>.json."""

    def write(name: str, facts: dict) -> None:
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / f"{name}.json").write_text(json.dumps(facts, indent=2) + "\n")

    return write


@pytest.fixture(scope="session")
def writable_mounts():
    return kubernetes_volumes


def kubernetes_volumes(directory: Path, mode: int = 0o1777) -> list[str]:
    """Host folders standing in for the Kubernetes Deployment's emptyDir volumes, at the same
    mount paths, plus its environment: the only places the manifests let the server write."""
    deployment = next(
        document
        for document in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
        if document
    )
    (spec,) = deployment["spec"]["template"]["spec"]["containers"]
    options = [f"--env={variable['name']}={variable['value']}" for variable in spec.get("env", [])]
    for mount in spec["volumeMounts"]:
        folder = directory / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(mode)
        options.append(f"--volume={folder}:{mount['mountPath']}")
    return options
