"""The servers the benchmark compares, each started on free loopback ports, ready, and always stopped.

Each yields an Endpoint: where to POST, the root of the process tree whose memory
counts, the ports it listened on (to check afterwards that nothing is left), and the
settings it reports running with.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.torchserve_defaults import default_torchserve
from harness.torchserve import Server, stop, torchserve
from model.config import ROOT
from model.lifecycle.ports import free_ports


@dataclass(frozen=True)
class Endpoint:
    url: str  # POST predictions here
    pid: int  # the process tree under this pid is the whole service
    ports: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)


def url_port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"{url} names no port")
    return port


def torchserve_endpoint(server: Server, model: str) -> Endpoint:
    """TorchServe's own account of the model's serving settings: batch, delay, workers."""
    with urllib.request.urlopen(f"{server.management_url}/models/{model}", timeout=10) as reply:
        described = json.load(reply)[0]
    settings = {key: described.get(key) for key in ("batchSize", "maxBatchDelay", "minWorkers", "maxWorkers")}
    settings["workers"] = len(described.get("workers", []))
    ports = tuple(url_port(url) for url in (server.inference_url, server.management_url, server.metrics_url))
    return Endpoint(f"{server.inference_url}/predictions/{model}", server.process.pid, ports, settings)


@contextlib.contextmanager
def tuned_torchserve(archive: Path, workdir: Path, model: str, plugins: Path | None = None) -> Iterator[Endpoint]:
    """The project's archive, config.properties and frontend plugins, started exactly as the image starts them."""
    with torchserve(archive.parent, workdir, model, plugins=plugins) as server:
        yield torchserve_endpoint(server, model)


@contextlib.contextmanager
def defaults_torchserve(model_dir: Path, workdir: Path, model: str) -> Iterator[Endpoint]:
    """The same handler and model under TorchServe's defaults (see benchmarks.torchserve_defaults)."""
    with default_torchserve(model_dir, workdir, model) as server:
        yield torchserve_endpoint(server, model)


@contextlib.contextmanager
def module_server(
    module: str, export_dir: Path, log: Path, ready_path: str, timeout: float
) -> Iterator[tuple[int, subprocess.Popen]]:
    """`python -m module --port P --export-dir D` in its own process on a free port, its output
    in `log`; its port and process once `ready_path` answers; stopped on leaving."""
    log.parent.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port), "--export-dir", str(export_dir)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}{ready_path}", process, log, timeout)
        yield port, process
    finally:
        stop(process)


@contextlib.contextmanager
def fastapi_server(export_dir: Path, workdir: Path, model: str, timeout: float = 60) -> Iterator[Endpoint]:
    """benchmarks.fastapi_server in its own process; ready when /ping answers (the model loads first)."""
    with module_server("benchmarks.fastapi_server", export_dir, workdir / "fastapi.log", "/ping", timeout) as (
        port,
        process,
    ):
        yield Endpoint(
            f"http://127.0.0.1:{port}/predictions/{model}",
            process.pid,
            (port,),
            {"workers": 1, "torch_threads": 1, "server": "uvicorn (httptools, uvloop)"},
        )


def wait_for_ping(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the FastAPI server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the FastAPI server did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
