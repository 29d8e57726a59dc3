"""Run the real TorchServe the way the image does (docker/entrypoint.sh + config.properties),
on free loopback ports; always stopped afterwards.

The harness (this package) is what the tests, the load-test gate (loadtest/) and the
benchmarks (benchmarks/) use to start real servers; the product (model/, handler/) never
imports it."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model.config import ROOT
from model.lifecycle.ports import free_ports

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


@functools.cache
def healthcheck():
    """docker/healthcheck.py, the image's readiness probe, loaded on first use (importing the
    harness runs nothing)."""
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "docker" / "healthcheck.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ROOT / 'docker' / 'healthcheck.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Server:
    inference_url: str
    management_url: str
    metrics_url: str
    process: subprocess.Popen
    log: Path
    oip_url: str = ""  # the Open Inference Protocol v2 routes, where the plugin serves them
    # TorchServe's own inference API behind the bounding proxy (docker/haproxy.cfg), where the
    # entrypoint started one; inference_url is then the proxy's address
    upstream_url: str = ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def isolated_env(workdir: Path) -> dict[str, str]:
    """The environment that keeps a TorchServe's files (pid file, worker sockets, unpacked
    archives, logs) under `workdir`, so several servers can run side by side."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TEMP": str(workdir),  # the JVM's tmpdir: worker sockets, unpacked archives
        "TMPDIR": str(workdir),  # the launcher's pid file
        "LOG_LOCATION": str(workdir / "logs"),
        "METRICS_LOCATION": str(workdir / "logs"),
    }


@contextlib.contextmanager
def running(
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    ports: tuple[int, int, int],
    model: str | None = None,
    timeout: float = 180,
    cwd: Path | None = None,
    oip_url: str = "",
    upstream_url: str = "",
) -> Iterator[Server]:
    """Start a TorchServe command, wait until `model`'s workers (by default, those of every model
    it loaded at start) are READY, always stop it. ports: inference, management, metrics."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "torchserve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    inference, management, metrics = ports
    server = Server(
        f"http://127.0.0.1:{inference}",
        f"http://127.0.0.1:{management}",
        f"http://127.0.0.1:{metrics}",
        process,
        log,
        oip_url,
        upstream_url,
    )
    try:
        wait_until_ready(server, model, timeout)
        yield server
    finally:
        stop(process)


def torchserve_command(
    model_store: Path,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    command_prefix: list[str] | None = None,
    plugins: Path | None = None,
) -> tuple[list[str], dict[str, str], tuple[int, int, int], str]:
    """The image's start command (entrypoint + config.properties) with every port free on loopback:
    (command, environment, (inference, management, metrics) ports, Open Inference Protocol URL).
    The inference port is the bounding proxy's; TorchServe's own is env["INFERENCE_UPSTREAM_ADDRESS"].
    `plugins`: a folder with the frontend plugin jar (the v2 protocol); without it, v2 is off."""
    inference, management, metrics, grpc_inference, grpc_management, oip, upstream, gateway = free_ports(8)
    env = {
        **isolated_env(workdir),
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{inference}",
        "INFERENCE_UPSTREAM_ADDRESS": f"http://127.0.0.1:{upstream}",
        "MANAGEMENT_GATEWAY_UPSTREAM_ADDRESS": f"http://127.0.0.1:{gateway}",
        "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{management}",
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}",
        "TS_GRPC_INFERENCE_PORT": str(grpc_inference),
        "TS_GRPC_MANAGEMENT_PORT": str(grpc_management),
        "TS_OIP_ADDRESS": f"http://127.0.0.1:{oip}",
        "TS_MODEL_STORE": str(model_store),
        # Only the plugins asked for, never the checkout's plugins/ (the entrypoint's default),
        # whatever an earlier build left there; an empty folder without them.
        "TS_PLUGINS_PATH": str(plugins or empty_folder(workdir / "no-plugins")),
        **(extra_env or {}),
    }
    if "MANAGEMENT_TOKEN_FILE" in env:  # behind the gateway: TorchServe's own management API stays where asked
        env.setdefault("MANAGEMENT_UPSTREAM_ADDRESS", env["TS_MANAGEMENT_ADDRESS"])
    command = [*(command_prefix or []), str(ENTRYPOINT)]
    return command, env, (inference, management, metrics), f"http://127.0.0.1:{oip}"


def empty_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def torchserve(
    model_store: Path,
    workdir: Path,
    model: str | None = None,
    timeout: float = 180,
    extra_env: dict[str, str] | None = None,
    command_prefix: list[str] | None = None,
    plugins: Path | None = None,
) -> Iterator[Server]:
    """Start TorchServe the way the image does (entrypoint + config.properties) with
    `model_store`, on free ports, its files under `workdir`; stop it on exit.
    `command_prefix` wraps the entrypoint (e.g. ["taskset", "-c", "0"]: the server and its
    workers inherit it). With `plugins`, the server's oip_url is where the v2 routes are."""
    command, env, ports, oip = torchserve_command(model_store, workdir, extra_env, command_prefix, plugins)
    with running(
        command,
        env,
        workdir,
        ports,
        model,
        timeout,
        oip_url=oip if plugins else "",
        upstream_url=env["INFERENCE_UPSTREAM_ADDRESS"],
    ) as server:
        yield server


def wait_until_ready(server: Server, model: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"TorchServe exited with {server.process.returncode}:\n{server.log_tail()}")
        if healthcheck().model_ready(server.management_url, model, every_worker=True):
            return
        time.sleep(0.25)
    raise TimeoutError(f"{model or 'the models'} not READY after {timeout:.0f} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the whole process group (frontend and workers), SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
