"""Run the project's images the way a user does — `docker run -p HOST:8080 mymodel-serve`,
or `podman run` on a machine without a Docker engine — for the image tests and
`make loadtest-image`: published ports on loopback, the image's own HEALTHCHECK, always
removed afterwards.

Part of the harness: what the tests, the load-test gate and the benchmarks use to start real
servers; the product never imports it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from harness.torchserve import healthcheck
from model.config import ROOT, load_settings
from model.lifecycle.ports import free_ports

SERVE_IMAGE = os.environ.get("SERVE_IMAGE", "mymodel-serve")
OFFLINE_IMAGE = os.environ.get("OFFLINE_IMAGE", "mymodel-offline")
# podman/buildah settings for machines without systemd (docker/podman/): used unless the caller
# has its own.
PODMAN_CONFIG = {
    "CONTAINERS_CONF": ROOT / "docker" / "podman" / "containers.conf",
    "CONTAINERS_STORAGE_CONF": ROOT / "docker" / "podman" / "storage.conf",
}
# The ports the serving image publishes: predictions, management, metrics, Open Inference Protocol.
INFERENCE, MANAGEMENT, METRICS, OIP = 8080, 8081, 8082, 8083


class NoEngine(RuntimeError):
    """Neither a working Docker engine nor podman is available."""


def docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@functools.cache
def engine() -> str:
    """`docker` where a Docker engine answers, else `podman` (decided once per process: every
    engine call, health polls included, would otherwise ask `docker info` again)."""
    if docker_works():
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise NoEngine("no Docker engine answers and podman is not installed (make container-tools installs it)")


def engine_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    if name == "podman":
        for key, path in PODMAN_CONFIG.items():
            env.setdefault(key, str(path))
    return env


def run_engine(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    name = engine()
    result = subprocess.run(
        [name, *args], capture_output=True, text=True, timeout=timeout, env=engine_env(name), **kwargs
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def image_exists(image: str) -> bool:
    return run_engine("image", "inspect", image, check=False).returncode == 0


def image_size_mb(image: str) -> float:
    return int(run_engine("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()) / 1e6


@dataclass
class Container:
    name: str
    ports: dict[int, int]  # container port -> published loopback port
    started: float = field(default_factory=time.monotonic)

    def url(self, port: int = INFERENCE) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def exec(self, *command: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_engine("exec", self.name, *command, check=check, timeout=timeout)

    def healthy(self) -> bool:
        """The image's own HEALTHCHECK, run now (podman has no scheduler for it without systemd;
        docker runs it on its interval, so its last status is read)."""
        if engine() == "podman":
            return run_engine("healthcheck", "run", self.name, check=False, timeout=60).returncode == 0
        status = run_engine("inspect", "--format", "{{.State.Health.Status}}", self.name, check=False)
        return status.stdout.strip() == "healthy"

    def state(self) -> dict:
        return json.loads(run_engine("inspect", "--format", "{{json .State}}", self.name).stdout)

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def logs(self) -> str:
        result = run_engine("logs", self.name, check=False)
        return result.stdout + result.stderr

    def describe_model(self, model: str | None = None) -> list[dict]:
        """The management API's description of the model (default: the one params.yaml names),
        asked from inside the container (management listens on the container's loopback)."""
        model = model or load_settings().model.name
        script = (
            "import json, sys; sys.path.insert(0, '/home/model-server/docker'); import healthcheck; "
            f"print(json.dumps(healthcheck.describe(healthcheck.management_address(), {model!r})))"
        )
        result = self.exec("python", "-c", script, check=True)
        return json.loads(result.stdout) or []

    def wait_healthy(self, timeout: float = 300, poll: float = 1.0) -> list[tuple[float, bool, bool]]:
        """Poll the HEALTHCHECK until it passes; returns every poll's (seconds since start, healthy,
        a READY worker as the management API says at that moment)."""
        polls = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.state().get('ExitCode')}:\n{self.logs()[-4000:]}")
            healthy = self.healthy()
            try:
                probe = healthcheck()
                ready = probe.any_ready(probe.default_version_workers(self.describe_model()))
            except (RuntimeError, ValueError):  # the container is still starting its Python
                ready = False
            polls.append((time.monotonic() - self.started, healthy, ready))
            if healthy:
                return polls
            time.sleep(poll)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.logs()[-4000:]}")

    def stop(self, grace: int = 30) -> tuple[float, int]:
        """`docker stop` / `podman stop` (SIGTERM, then SIGKILL after `grace` seconds):
        (seconds it took, the container's exit code)."""
        began = time.monotonic()
        run_engine("stop", "-t", str(grace), self.name, timeout=grace + 60)
        return time.monotonic() - began, int(self.state()["ExitCode"])


def run_command(
    image: str, name: str, ports: dict[int, int], options: Sequence[str] = (), arguments: Sequence[str] = ()
) -> list[str]:
    """The `run` command a user types, with each container port published on a loopback port."""
    published = [f"--publish=127.0.0.1:{host}:{inside}" for inside, host in ports.items()]
    return ["run", "--detach", f"--name={name}", *published, *options, image, *arguments]


@contextlib.contextmanager
def started(
    image: str = SERVE_IMAGE,
    options: Sequence[str] = (),
    publish: Sequence[int] = (INFERENCE, METRICS, OIP),
    wait: bool = True,
    timeout: float = 300,
) -> Iterator[Container]:
    """Start a container of `image` with `publish` on free loopback ports, wait for its
    HEALTHCHECK (unless `wait` is false), always remove it."""
    name = f"mymodel-{uuid.uuid4().hex[:8]}"
    ports = dict(zip(publish, free_ports(len(publish))))
    run_engine(*run_command(image, name, ports, options))
    container = Container(name, ports)
    try:
        if wait:
            container.wait_healthy(timeout)
        yield container
    finally:
        run_engine("rm", "--force", name, check=False, timeout=120)
