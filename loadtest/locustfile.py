"""Locust users for the load scenarios (loadtest/slo.yaml). Run by loadtest/scenarios.py, one
user class per scenario:

    locust -f loadtest/locustfile.py --headless BaselineUser ...

Payloads come from JSON files written by `python -m loadtest.payloads` (LOADTEST_PAYLOADS
names their folder): this process must never import torch, since Locust patches the
interpreter with gevent. A request counts as a failure when its status is not the one
the payload expects (a prediction, or a clear 4xx for bad input); 5xx is always one.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import yaml
from locust import FastHttpUser, constant_throughput, task

PAYLOADS = Path(os.environ.get("LOADTEST_PAYLOADS", "reports/loadtest/payloads"))
RATE = float(os.environ.get("LOADTEST_RATE", "1.0"))  # requests per second per user
# The model the config names (loadtest/scenarios.py passes model.name; by hand: params.yaml's).
MODEL = os.environ.get("LOADTEST_MODEL") or yaml.safe_load(Path("params.yaml").read_text())["model"]["name"]
URL = f"/predictions/{MODEL}"
JSON = {"Content-Type": "application/json"}


def _load(name: str) -> list:
    return json.loads((PAYLOADS / name).read_text())


RECORDS = _load("records.json")
ANOMALOUS = _load("anomalous.json")
ADVERSARIAL = _load("adversarial.json")
MAX_RECORDS = int(os.environ.get("LOADTEST_MAX_RECORDS", "1000"))
MAX_BYTES = int(os.environ.get("LOADTEST_MAX_BYTES", str(1 << 20)))


def check(response, expected: int) -> None:
    """Success only for the expected status; a 4xx must also explain itself in JSON."""
    status = response.status_code
    if status != expected:
        response.failure(f"expected {expected}, got {status}: {response.text[:120]}")
    elif 400 <= status < 500 and status != 413 and "error" not in response.text:
        response.failure(f"{status} without a JSON error")
    else:
        response.success()


class BaselineUser(FastHttpUser):
    """Real test-month records, one per request, at a steady rate."""

    wait_time = constant_throughput(RATE)

    @task
    def predict_one(self) -> None:
        with self.client.post(
            URL, data=json.dumps(random.choice(RECORDS)), headers=JSON, name="one record", catch_response=True
        ) as response:
            check(response, 200)


class AnomalousUser(FastHttpUser):
    """Noisy, out-of-range, unknown, missing and adversarial records: every one gets a
    prediction or a clear 4xx, never a 5xx."""

    wait_time = constant_throughput(RATE)

    @task(3)
    def anomalous(self) -> None:
        case = random.choice(ANOMALOUS)
        with self.client.post(
            URL, data=json.dumps(case["record"]), headers=JSON, name=f"anomalous: {case['kind']}", catch_response=True
        ) as response:
            check(response, case["expected_status"])

    @task(1)
    def adversarial(self) -> None:
        if not ADVERSARIAL:  # none without a model at hand (a server tested by URL before any training)
            return
        case = random.choice(ADVERSARIAL)
        with self.client.post(
            URL, data=json.dumps(case["record"]), headers=JSON, name="adversarial", catch_response=True
        ) as response:
            check(response, 200)


class OversizedUser(FastHttpUser):
    """Large batches: the largest accepted list, one record over it, a body over the size limit."""

    wait_time = constant_throughput(RATE)

    def on_start(self) -> None:
        records = (RECORDS * (MAX_RECORDS // len(RECORDS) + 2))[: MAX_RECORDS + 1]
        self.largest = json.dumps(records[:MAX_RECORDS])
        self.one_over = json.dumps(records)
        self.too_big = json.dumps(records[:1] + [{"padding": "x" * MAX_BYTES}])

    @task(3)
    def largest_batch(self) -> None:
        with self.client.post(
            URL, data=self.largest, headers=JSON, name=f"{MAX_RECORDS} records", catch_response=True
        ) as response:
            check(response, 200)

    @task(1)
    def one_record_over(self) -> None:
        with self.client.post(
            URL, data=self.one_over, headers=JSON, name=f"{MAX_RECORDS + 1} records", catch_response=True
        ) as response:
            check(response, 413)

    @task(1)
    def body_over_the_limit(self) -> None:
        with self.client.post(
            URL, data=self.too_big, headers=JSON, name="body over the size limit", catch_response=True
        ) as response:
            check(response, 413)
