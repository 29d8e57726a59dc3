"""Readiness (docker/healthcheck.py, the image's HEALTHCHECK and the Kubernetes readiness probe):
a replica with one worker restarting stays ready and keeps answering, and the restart shows on the
metrics port where the MymodelWorkerRestarts alert (deploy/prometheus/alerts.yml) reads it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from harness.torchserve import Server, healthcheck
from model.config import ROOT

SAMPLE = (ROOT / "sample_input.json").read_bytes()


def workers(server: Server) -> list[dict]:
    return requests.get(f"{server.management_url}/models/mymodel", timeout=10).json()[0]["workers"]


def load_times(server: Server) -> dict[str, float]:
    """WorkerLoadTime per worker name, as Prometheus scrapes it."""
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    return {
        line.split('WorkerName="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("WorkerLoadTime{")
    }


def test_one_worker_restarting_leaves_the_replica_ready_and_answering(server):
    before = workers(server)
    assert len(before) >= 2 and all(worker["status"] == "READY" for worker in before)
    times_before = load_times(server)
    assert times_before, "WorkerLoadTime is not on the metrics port: the restart alert would never fire"
    victim = before[0]
    os.kill(victim["pid"], signal.SIGKILL)
    seen, answers = [], []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = {worker["id"]: (worker["status"], worker["pid"]) for worker in workers(server)}
        probe = subprocess.run(
            [sys.executable, str(ROOT / "docker" / "healthcheck.py"), "--management-url", server.management_url],
            timeout=30,
        ).returncode
        answers.append(
            requests.post(
                f"{server.inference_url}/predictions/mymodel",
                data=SAMPLE,
                headers={"Content-Type": "application/json"},
                timeout=30,
            ).status_code
        )
        seen.append((states[victim["id"]], probe))
        restarted = states[victim["id"]][0] == "READY" and states[victim["id"]][1] != victim["pid"]
        if restarted and len(seen) > 1:
            break
        time.sleep(0.2)
    # The killed worker was seen not READY, the probe said ready all along, and predictions were answered.
    assert any(state[0] != "READY" for state, _ in seen), seen
    assert all(probe == 0 for _, probe in seen), seen
    assert set(answers) == {200}, answers
    assert healthcheck().model_ready(server.management_url, every_worker=True)
    # The restart set the worker's WorkerLoadTime anew: what MymodelWorkerRestarts counts with changes().
    times_after = load_times(server)
    assert times_after.keys() == times_before.keys()
    changed = [name for name in times_after if times_after[name] != times_before[name]]
    assert len(changed) == 1, (times_before, times_after)


def test_a_server_with_no_ready_worker_is_not_ready(server):
    """Every worker scaled away: not ready (the probe's other half), then ready again."""
    url = f"{server.management_url}/models/mymodel"
    count = len(workers(server))
    try:
        assert (
            requests.put(url, params={"min_worker": 0, "max_worker": 0, "synchronous": "true"}, timeout=120).status_code
            == 200
        )
        assert not healthcheck().model_ready(server.management_url)
    finally:
        requests.put(url, params={"min_worker": count, "max_worker": count, "synchronous": "true"}, timeout=120)
    assert healthcheck().model_ready(server.management_url, every_worker=True)
