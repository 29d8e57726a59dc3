"""The adaptive batch delay (handler/frontend/AdaptiveBatchDelay.java) in a real TorchServe: with
no traffic the model's delay goes to 0 (a lone request waits for nobody); while requests queue it is
the configured delay again (batches fill); every answer is right either way. Off, nothing changes."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
import yaml

from model.artifact.archive import HANDLER_DIR
from model.config import ROOT
from model.lifecycle.torchserve import torchserve

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())
CONFIGURED = yaml.safe_load((HANDLER_DIR / "model-config.yaml").read_text())["maxBatchDelay"]


def delay(server) -> int:
    return requests.get(f"{server.management_url}/models/mymodel", timeout=10).json()[0]["maxBatchDelay"]


def settled_delay(server, wanted: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (current := delay(server)) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return current


def burst(server, clients: int = 48, seconds: float = 3) -> tuple[list[int], set[int]]:
    """`clients` threads in a closed loop for `seconds`; the statuses, and the delays seen meanwhile."""
    statuses: list[int] = []
    seen: set[int] = set()
    stop = time.monotonic() + seconds

    def client():
        with requests.Session() as session:
            while time.monotonic() < stop:
                reply = session.post(f"{server.inference_url}/predictions/mymodel", data=json.dumps(SAMPLE),
                                     headers={"Content-Type": "application/json"}, timeout=30)
                statuses.append(reply.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    while time.monotonic() < stop:
        seen.add(delay(server))
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    return statuses, seen


@pytest.fixture(scope="module")
def adaptive(archive, plugins, tmp_path_factory):
    with torchserve(archive.parent, tmp_path_factory.mktemp("adaptive"), plugins=plugins,
                    extra_env={"TS_ADAPTIVE_BATCH_DELAY": "true"}) as server:
        yield server


def test_the_configured_delay_is_one_that_adapts():
    assert CONFIGURED > 0


def test_with_no_traffic_the_delay_goes_to_zero(adaptive):
    assert settled_delay(adaptive, 0) == 0


def test_while_requests_queue_the_configured_delay_is_back_and_goes_again(adaptive):
    statuses, seen = burst(adaptive)
    assert statuses and set(statuses) == {200}
    assert CONFIGURED in seen
    assert settled_delay(adaptive, 0) == 0


def test_a_lone_request_is_answered_as_always(adaptive):
    settled_delay(adaptive, 0)
    reply = requests.post(f"{adaptive.inference_url}/predictions/mymodel", data=json.dumps([SAMPLE, SAMPLE]),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert reply.status_code == 200 and len(reply.json()) == 2


def test_off_the_delay_stays_as_configured(archive, plugins, tmp_path):
    off = {"TS_ADAPTIVE_BATCH_DELAY": "false"}
    with torchserve(archive.parent, tmp_path, plugins=plugins, extra_env=off) as server:
        time.sleep(0.5)
        assert delay(server) == CONFIGURED
