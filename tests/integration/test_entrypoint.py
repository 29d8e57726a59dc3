"""docker/entrypoint.sh natively, as the image runs it: a SIGTERM turns readiness false and ends
TorchServe with exit 0, even one that arrives as the first child starts; a child that ends (the
management gateway) ends the container with status 1; a frontend that ignores the stop is killed
after TS_STOP_SECONDS; and the management gateway lets only token holders manage the model.
(tests/image runs the same in the container; tests/integration/test_gateway.py attacks the gateway.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from harness.torchserve import Server, torchserve_command, wait_until_ready
from model.config import ROOT
from model.lifecycle.ports import free_ports
from tests.waiting import wait_for

SAMPLE = (ROOT / "sample_input.json").read_bytes()
HEALTHCHECK = [sys.executable, str(ROOT / "docker" / "healthcheck.py")]


def start(archive, plugins, workdir, extra_env=None):
    command, env, ports, _ = torchserve_command(archive.parent, workdir, extra_env, plugins=plugins)
    log = workdir / "torchserve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    inference, management, metrics = ports
    server = Server(
        f"http://127.0.0.1:{inference}", f"http://127.0.0.1:{management}", f"http://127.0.0.1:{metrics}", process, log
    )
    return server, env


def group(leader: int) -> list[psutil.Process]:
    """Every live process of the entrypoint's process group: itself, TorchServe, its workers, the gateway."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == leader and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def child(server, word: str, timeout: float = 120) -> psutil.Process:
    """The first process under the entrypoint whose command line holds `word`, as soon as it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log_tail()
        for process in psutil.Process(server.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any(word in part for part in process.cmdline()):
                    return process
        time.sleep(0.01)
    raise TimeoutError(f"no {word} process after {timeout:.0f} s:\n{server.log_tail()}")


def gateway_env(tmp_path):
    token = tmp_path / "token"
    token.write_text("a-token\n")
    gateway, upstream = free_ports(2)
    return (
        {
            "MANAGEMENT_TOKEN_FILE": str(token),
            "MANAGEMENT_GATEWAY_ADDRESS": f"http://127.0.0.1:{gateway}",
            "MANAGEMENT_UPSTREAM_ADDRESS": f"http://127.0.0.1:{upstream}",
        },
        gateway,
        upstream,
    )


def healthy(env, management_url):
    return subprocess.run([*HEALTHCHECK, "--management-url", management_url], env=env, timeout=30).returncode == 0


def test_sigterm_turns_readiness_false_then_stops_with_exit_0(archive, plugins, tmp_path):
    server, env = start(archive, plugins, tmp_path, {"TS_DRAIN_SECONDS": "3"})
    try:
        wait_until_ready(server, "mymodel", 180)
        assert healthy(env, server.management_url)
        began = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)  # the entrypoint alone, as a container runtime does
        # not ready while still draining (3 s) ...
        wait_for(lambda: not healthy(env, server.management_url), 2, "readiness false after SIGTERM")
        reply = requests.post(
            f"{server.inference_url}/predictions/mymodel",
            data=SAMPLE,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert reply.status_code == 200  # ... and still answering
        assert server.process.wait(30) == 0
        assert 3 <= time.monotonic() - began < 20
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)


def test_the_management_gateway_needs_the_token(archive, plugins, tmp_path):
    token = tmp_path / "token"
    token.write_text("a-token\n")
    gateway, upstream = free_ports(2)
    server, env = start(
        archive,
        plugins,
        tmp_path,
        {
            "MANAGEMENT_TOKEN_FILE": str(token),
            "MANAGEMENT_GATEWAY_ADDRESS": f"http://127.0.0.1:{gateway}",
            "MANAGEMENT_UPSTREAM_ADDRESS": f"http://127.0.0.1:{upstream}",
        },
    )
    server = Server(
        server.inference_url, f"http://127.0.0.1:{upstream}", server.metrics_url, server.process, server.log
    )
    try:
        wait_until_ready(server, "mymodel", 180)
        # The healthcheck finds TorchServe's own management port through the entrypoint's note.
        assert subprocess.run(HEALTHCHECK, env=env, timeout=30).returncode == 0
        published = f"http://127.0.0.1:{gateway}"
        refused = requests.get(f"{published}/models", timeout=10)
        assert refused.status_code == 401 and refused.json()["code"] == 401
        assert (
            requests.get(f"{published}/models", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code
            == 401
        )
        allowed = requests.get(f"{published}/models/mymodel", headers={"Authorization": "Bearer a-token"}, timeout=10)
        assert allowed.status_code == 200 and allowed.json()[0]["modelName"] == "mymodel"
        token.write_text("rotated\n")  # read at every request: a rotated secret applies at once
        assert (
            requests.get(f"{published}/models", headers={"Authorization": "Bearer a-token"}, timeout=10).status_code
            == 401
        )
        assert (
            requests.get(f"{published}/models", headers={"Authorization": "Bearer rotated"}, timeout=10).status_code
            == 200
        )
    finally:
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(30) == 0


def test_a_stop_signal_as_the_first_child_starts_ends_everything_with_exit_0(archive, plugins, tmp_path):
    """The traps are in place before any child starts: a SIGTERM at that moment is a normal stop."""
    extra, _, _ = gateway_env(tmp_path)
    server, _ = start(archive, plugins, tmp_path, extra)
    try:
        child(server, "management_gateway.py")
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log_tail()
        assert group(server.process.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)


def test_a_gateway_that_dies_ends_the_container_with_status_1_and_says_so(archive, plugins, tmp_path):
    extra, _, upstream = gateway_env(tmp_path)
    server, _ = start(archive, plugins, tmp_path, extra)
    server = Server(
        server.inference_url, f"http://127.0.0.1:{upstream}", server.metrics_url, server.process, server.log
    )
    try:
        wait_until_ready(server, "mymodel", 180)
        child(server, "management_gateway.py").kill()
        assert server.process.wait(30) == 1
        assert "management-gateway stopped unexpectedly" in server.log_tail(), server.log_tail()
        assert group(server.process.pid) == []  # TorchServe and its workers stopped with it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)


def test_a_frontend_that_ignores_the_stop_is_killed_after_ts_stop_seconds(archive, plugins, tmp_path):
    stop_seconds = 2
    server, _ = start(archive, plugins, tmp_path, {"TS_STOP_SECONDS": str(stop_seconds)})
    try:
        wait_until_ready(server, "mymodel", 180)
        child(server, "org.pytorch.serve.ModelServer").suspend()  # a frontend that cannot react (SIGSTOP)
        began = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(30) == 1
        assert stop_seconds <= time.monotonic() - began < stop_seconds + 10
        assert "torchserve still ran 2 s after it was asked to stop (TS_STOP_SECONDS): killed" in server.log_tail()
        assert group(server.process.pid) == []  # the frontend, its launcher and its workers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)


@pytest.mark.parametrize("setting", ["TS_STOP_SECONDS", "TS_DRAIN_SECONDS"])
def test_a_stop_timing_that_is_not_whole_seconds_is_refused_before_anything_starts(archive, tmp_path, setting):
    result = subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "TS_MODEL_STORE": str(archive.parent), setting: "2.5s"},
    )
    assert result.returncode == 1
    assert f"{setting} must be a whole number of seconds, not '2.5s'" in result.stderr
    assert "torchserve" not in result.stdout.lower()  # nothing was started
