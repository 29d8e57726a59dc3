"""docs/troubleshooting.md's messages, brought about for real: a taken port, a missing archive,
an archive whose workers never load (and, while they try, a body over the size limit and a
full queue), and `make setup` without Python 3.11 or a JDK. Each page block's lines must be in
what the service printed or answered, with `...` for what varies and this run's ports, paths
and timeout put back to the defaults the page shows."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from harness.torchserve import stop, torchserve_command
from model.config import ROOT

PAGE = (ROOT / "docs" / "troubleshooting.md").read_text()
FENCED = re.compile(r"```text\n(.*?)```", re.S)


def blocks(heading: str) -> list[str]:
    section = PAGE.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return FENCED.findall(section)


def assert_shown(block: str, seen: str) -> None:
    for line in filter(None, (line.strip() for line in block.splitlines())):
        pattern = ".*".join(re.escape(part) for part in line.split("..."))
        assert re.search(pattern, seen), f"the page shows {line!r}, the service said:\n{seen[-3000:]}"


def entrypoint(store: Path, workdir: Path, **extra: str):
    workdir.mkdir(parents=True, exist_ok=True)
    command, env, ports, _ = torchserve_command(store, workdir, extra_env=extra)
    return command, env, ports


def defaults(text: str, ports: tuple[int, int, int], store: Path) -> str:
    """This run's addresses and store as the page shows the defaults."""
    return text.replace(f"http://127.0.0.1:{ports[0]}", "http://0.0.0.0:8080").replace(str(store), "model-store")


@pytest.fixture
def broken_store(tmp_path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    (store / "mymodel.mar").write_bytes(b"not a model archive")
    return store


def test_a_taken_port(broken_store, tmp_path):
    command, env, ports = entrypoint(broken_store, tmp_path / "work")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1
    (block,) = blocks("The port is taken")
    assert_shown(block, defaults(done.stdout + done.stderr, ports, broken_store))


def test_a_missing_archive(tmp_path):
    store = tmp_path / "empty"
    store.mkdir()
    command, env, ports = entrypoint(store, tmp_path / "work")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert_shown(blocks("The model did not load")[0], defaults(done.stderr, ports, store))


def test_workers_that_never_load_and_meanwhile_a_large_body_and_a_full_queue(broken_store, tmp_path):
    startup = 60  # long enough for a worker to start and die at least once on a busy machine
    command, env, ports = entrypoint(
        broken_store, tmp_path / "work", TS_STARTUP_SECONDS=str(startup), TS_JOB_QUEUE_SIZE="1"
    )
    server = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    url = f"http://127.0.0.1:{ports[0]}/predictions/mymodel"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{ports[0]}/ping", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        too_large = requests.post(
            url, data=b"[" + b" " * (1 << 20) + b"]", headers={"Content-Type": "application/json"}, timeout=30
        )
        # Three at once for one queue place that no worker empties: the others find it full.
        answers: list[requests.Response] = []
        for _ in range(3):
            threading.Thread(target=_post_quietly, args=(url, answers), daemon=True).start()
        while not answers and time.monotonic() < deadline:
            time.sleep(0.1)
        full = answers[0] if answers else None
        out, err = server.communicate(timeout=startup + 120)
    finally:
        stop(server)  # the whole process group: the entrypoint, TorchServe and its workers
    assert server.returncode == 1
    log = defaults(out + err, ports, broken_store).replace(f"after {startup} s", "after 300 s")
    assert_shown(blocks("The model did not load")[1], log)

    assert too_large.status_code == 413 and too_large.json()["type"] == "payload_too_large"
    shown = (
        f"HTTP/1.1 {too_large.status_code} {too_large.reason}\n"
        + "".join(f"{key}: {value}\n" for key, value in too_large.headers.items())
        + "\n"
        + too_large.text
    )
    assert_shown(blocks("413 Request Entity Too Large")[0], shown)

    assert full is not None and full.status_code == 503
    assert_shown(blocks("503 when the queue is full")[0], full.text)


def _post_quietly(url: str, answers: list) -> None:
    with contextlib.suppress(requests.RequestException):  # the server stops while this one still waits
        answers.append(requests.post(url, json={}, timeout=120))


def make_setup(tmp_path: Path, python3: str) -> subprocess.CompletedProcess:
    """`make setup` in a copy of the Makefile with only `python3` on PATH (no java, no javac)."""
    work, tools = tmp_path / "checkout", tmp_path / "bin"
    work.mkdir()
    tools.mkdir()
    for name in ("Makefile", "requirements.txt", "requirements.lock"):
        shutil.copy(ROOT / name, work / name)
    (tools / "python3").write_text(python3)
    (tools / "python3").chmod(0o755)
    return subprocess.run(
        [shutil.which("make"), "setup"], cwd=work, env={"PATH": str(tools)}, capture_output=True, text=True, timeout=60
    )


def test_make_setup_names_the_python_it_found(tmp_path):
    done = make_setup(tmp_path, '#!/bin/sh\n[ "$1" = --version ] && { echo "Python 3.9.2"; exit 0; }\nexit 1\n')
    assert done.returncode != 0 and not (tmp_path / "checkout" / ".venv").exists()
    assert_shown(blocks("No Java, or not Python 3.11")[0], done.stdout + done.stderr)


def test_make_setup_asks_for_a_jdk(tmp_path):
    done = make_setup(tmp_path, f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # Python 3.11, no java
    assert done.returncode != 0 and not (tmp_path / "checkout" / ".venv").exists()
    assert_shown(blocks("No Java, or not Python 3.11")[1], done.stdout + done.stderr)
