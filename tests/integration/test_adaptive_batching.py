"""Adaptive batching (handler/frontend/AdaptiveBatching.java) in a real TorchServe: with no traffic
the model's delay goes to 0 (a lone request waits for nobody); while requests queue it is the
configured delay again (batches fill). The batch size is each worker's share of the queue: a few
queued requests of 100 records go to the two workers side by side, a long queue fills batches
again, and with no traffic the size is 1. Every answer is right either way. Off, nothing changes."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
import yaml

from harness.torchserve import torchserve
from model.artifact.archive import HANDLER_DIR
from model.config import ROOT
from tests.waiting import described, settled, settled_batch_size

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())
MODEL_CONFIG = yaml.safe_load((HANDLER_DIR / "model-config.yaml").read_text())
CONFIGURED = MODEL_CONFIG["maxBatchDelay"]
CONFIGURED_BATCH = MODEL_CONFIG["batchSize"]
WORKERS = MODEL_CONFIG["minWorkers"]


def delay(server) -> int:
    return described(server)["maxBatchDelay"]


def settled_delay(server, wanted: int, timeout: float = 10) -> int:
    return settled(lambda: delay(server), wanted, timeout)


def burst(
    server, clients: int = 48, seconds: float = 3, records: int = 1, setting: str = "maxBatchDelay"
) -> tuple[list[int], set[int]]:
    """`clients` threads in a closed loop for `seconds`, each request `records` records (one object
    when 1, a list otherwise); the statuses, and the values of `setting` seen meanwhile. Every
    answer must hold as many predictions as the request held records."""
    statuses: list[int] = []
    seen: set[int] = set()
    go = threading.Event()
    stop = 0.0
    body = json.dumps(SAMPLE if records == 1 else [SAMPLE] * records)

    def client():
        go.wait()
        with requests.Session() as session:
            while time.monotonic() < stop:
                reply = session.post(
                    f"{server.inference_url}/predictions/mymodel",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                answered = reply.json() if reply.status_code == 200 else None
                if records > 1 and not (isinstance(answered, list) and len(answered) == records):
                    statuses.append(-1)  # a wrong answer
                else:
                    statuses.append(reply.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:  # every client is waiting before the clock starts, however slowly they start
        thread.start()
    stop = time.monotonic() + seconds
    go.set()
    while True:  # at least one look, however busy the machine
        seen.add(described(server)[setting])
        if time.monotonic() >= stop:
            break
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    return statuses, seen


@pytest.fixture(scope="module")
def adaptive(archive, plugins, tmp_path_factory):
    with torchserve(
        archive.parent, tmp_path_factory.mktemp("adaptive"), plugins=plugins, extra_env={"TS_ADAPTIVE_BATCHING": "true"}
    ) as server:
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
    reply = requests.post(
        f"{adaptive.inference_url}/predictions/mymodel",
        data=json.dumps([SAMPLE, SAMPLE]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 200 and len(reply.json()) == 2


def test_a_few_queued_requests_are_shared_among_the_workers(adaptive):
    """Eight clients of 100-record bodies: at most eight requests queue, so a batch holds at most
    a worker's share of them (four), never the configured 32."""
    statuses, seen = burst(adaptive, clients=8, records=100, setting="batchSize")
    assert statuses and set(statuses) == {200}
    assert seen and max(seen) <= -(-8 // WORKERS) < CONFIGURED_BATCH
    assert settled_batch_size(adaptive, 1) == 1


def test_a_long_queue_fills_batches_again(adaptive):
    """96 clients of 100-record bodies: the workers are slower than the clients, so the queue is
    long (up to 96 requests), and a worker's share of it is more than the share of eight. (With
    1-record bodies the Python clients, not the workers, are the bottleneck on a busy machine, and
    the queue can stay short.)"""
    statuses, seen = burst(adaptive, clients=96, records=100, setting="batchSize")
    assert set(statuses) == {200}
    assert max(seen) > -(-8 // WORKERS)  # more than the share of eight queued requests
    assert max(seen) <= CONFIGURED_BATCH
    assert settled_batch_size(adaptive, 1) == 1


def test_off_the_delay_and_batch_size_stay_as_configured(archive, plugins, tmp_path):
    off = {"TS_ADAPTIVE_BATCHING": "false"}
    with torchserve(archive.parent, tmp_path, plugins=plugins, extra_env=off) as server:
        # No wait: on, the plugin announces itself before the model loads and has the delay at 0
        # within 100 ms of an empty queue, long before the workers are ready (seconds).
        assert not [line for line in server.log.read_text().splitlines() if "adaptive batching:" in line]
        assert delay(server) == CONFIGURED
        statuses, seen = burst(server, clients=8, seconds=2, records=100, setting="batchSize")
        assert set(statuses) == {200} and seen == {CONFIGURED_BATCH}


def test_the_plugin_reports_no_error_from_start_to_now(adaptive):
    """Its timer starts before TorchServe has a model manager: that is no error to report."""
    reported = [line for line in adaptive.log.read_text().splitlines() if "adaptive batching:" in line]
    assert reported and not [line for line in reported if "Exception" in line]
