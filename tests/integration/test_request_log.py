"""Traceable requests against a real TorchServe started with LOG_FORMAT=json and
ACCESS_LOG_LEVEL=info: every answer carries an X-Request-ID (on the v2 routes the client's, when
given; TorchServe's own routes always send their own), every log line is one JSON object, and the
handler's request line holds that id (and the client's), the status, the model version and the
latency, and names the field a refusal was for."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness.torchserve import torchserve
from model.config import ROOT
from tests.v2_tensors import v2_inputs

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())
# Printed by TorchServe 0.12's launcher, its frontend and log4j itself before or outside the logging
# configuration (stdout and stderr), once at start.
OUTSIDE_LOGGING = (
    "Warning: TorchServe is using non-default JVM parameters:",
    "WARNING: sun.reflect.Reflection.getCallerClass is not supported.",
    "nvidia-smi not available or failed:",
    "Model server started.",
)


@pytest.fixture(scope="module")
def traced(archive, plugins, tmp_path_factory):
    env = {"LOG_FORMAT": "json", "ACCESS_LOG_LEVEL": "info"}
    with torchserve(archive.parent, tmp_path_factory.mktemp("request-log"), extra_env=env, plugins=plugins) as server:
        yield server


def predict(server, body, request_id: str | None = None, model: str = "mymodel") -> requests.Response:
    headers = {"Content-Type": "application/json", **({"X-Request-ID": request_id} if request_id else {})}
    return requests.post(
        f"{server.inference_url}/predictions/{model}", data=json.dumps(body), headers=headers, timeout=30
    )


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def log_entries(server) -> list[dict]:
    """Every line the server wrote (the entrypoint's own lines excepted), each parsed as JSON."""
    entries = []
    for line in server.log.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def request_lines(server, request_id: str, count: int = 1, timeout: float = 10) -> list[dict]:
    """The handler's request lines for one id (they reach the log through the worker's output)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e for e in log_entries(server) if e.get("logger") == "model.requests" and e["request_id"] == request_id
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("sent", [None, "client-id-1", "has spaces"])
def test_every_answer_carries_torchserves_request_id(traced, sent):
    """TorchServe 0.12 sets X-Request-ID to its own UUID for the request on every answer of its
    routes and replaces one the handler sets: the client's id cannot be echoed there."""
    first, second = predict(traced, SAMPLE, sent), predict(traced, SAMPLE, sent)
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(is_uuid(i) for i in ids) and ids[0] != ids[1]


def test_a_refused_request_and_a_frontend_refusal_carry_one_too(traced):
    refused = predict(traced, {**SAMPLE, "dep_delay": "soon"})
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "dep_delay"
    unknown = predict(traced, SAMPLE, model="nothing")  # answered by the frontend, no handler involved
    assert unknown.status_code == 404
    assert is_uuid(refused.headers["X-Request-ID"]) and is_uuid(unknown.headers["X-Request-ID"])


def test_the_request_line_holds_both_ids_status_version_and_latency(traced, schema):
    reply = predict(traced, [SAMPLE, SAMPLE], "client-ok")
    (line,) = request_lines(traced, reply.headers["X-Request-ID"])
    assert line["client_request_id"] == "client-ok"
    assert line["status"] == 200 and line["level"] == "info" and line["route"] == "predict"
    assert line["model"] == schema["x-model"]["name"] and line["model_version"] == schema["x-model"]["version"]
    assert line["latency_ms"] > 0 and line["scored"] == 2
    assert "fields" not in line and "error" not in line


def test_an_unsafe_client_id_is_not_logged(traced):
    reply = predict(traced, SAMPLE, "two words")
    (line,) = request_lines(traced, reply.headers["X-Request-ID"])
    assert "client_request_id" not in line


def test_a_refused_requests_line_names_the_field(traced):
    reply = predict(traced, {**SAMPLE, "distance": -5, "carrier": 7})
    (line,) = request_lines(traced, reply.headers["X-Request-ID"])
    assert line["status"] == 400 and line["level"] == "warning" and line["scored"] == 0
    assert set(line["fields"]) == {"distance", "carrier"}
    assert line["error"] == reply.json()["error"]


def test_v2_answers_carry_the_id_and_the_handler_logs_it(traced, schema):
    base = traced.oip_url
    tensors = requests.get(f"{base}/v2/models/mymodel", timeout=30).json()["inputs"]
    assert tensors
    bad = requests.post(
        f"{base}/v2/models/mymodel/infer",
        data=json.dumps({"inputs": []}),
        headers={"X-Request-ID": "v2-refused"},
        timeout=30,
    )
    assert bad.status_code == 400 and bad.headers["X-Request-ID"] == "v2-refused"
    unknown = requests.get(f"{base}/v2/models/nothing", headers={"X-Request-ID": "v2-unknown"}, timeout=30)
    assert unknown.status_code == 404 and unknown.headers["X-Request-ID"] == "v2-unknown"
    for sent in (None, "two words", "x" * 129):
        generated = requests.get(f"{base}/v2/health/live", headers={"X-Request-ID": sent} if sent else {}, timeout=30)
        assert is_uuid(generated.headers["X-Request-ID"])
    (line,) = request_lines(traced, "v2-refused")
    assert line["route"] == "v2_infer" and line["status"] == 400 and line["fields"]
    assert line["model_version"] == schema["x-model"]["version"] and "client_request_id" not in line


def test_v2_requests_in_flight_with_one_client_id_are_each_answered(traced, schema):
    """TorchServe keys a batch's jobs by request id: two v2 requests in flight with one X-Request-ID
    would lose an answer. The first keeps the client's id, the others in flight meanwhile get new
    UUIDs; each is answered and logged once under the id it was answered with."""
    body = json.dumps({"inputs": v2_inputs(schema, [SAMPLE] * 500)})
    clients = 16

    def send(barrier: threading.Barrier) -> requests.Response:
        barrier.wait(timeout=30)
        return requests.post(
            f"{traced.oip_url}/v2/models/mymodel/infer", data=body, headers={"X-Request-ID": "shared-7"}, timeout=30
        )

    with ThreadPoolExecutor(clients) as pool:
        replies = []
        for _ in range(3):
            barrier = threading.Barrier(clients)
            replies += list(pool.map(send, [barrier] * clients))
    assert [reply.status_code for reply in replies] == [200] * len(replies)
    ids = Counter(reply.headers["X-Request-ID"] for reply in replies)
    assert 1 <= ids["shared-7"] < len(replies)  # kept when free, never given twice at once
    assert all(is_uuid(i) for i in ids if i != "shared-7")
    for request_id, answers in ids.items():
        lines = request_lines(traced, request_id, answers)
        assert len(lines) == answers and all(line["status"] == 200 for line in lines)
        assert all(line.get("client_request_id") == "shared-7" for line in lines if request_id != "shared-7")


def test_every_log_line_is_one_json_object(traced):
    reply = predict(traced, SAMPLE, "json-lines")
    request_lines(traced, reply.headers["X-Request-ID"])
    lines = [line for line in traced.log.read_text().splitlines() if line.strip()]
    objects = [line for line in lines if line.startswith("{")]
    assert len(objects) > 10
    for line in objects:
        entry = json.loads(line)
        assert {"time", "level", "logger"} <= set(entry), line
    # what TorchServe 0.12 prints at start outside its logging, which no setting turns to JSON
    others = [line for line in lines if not line.startswith("{")]
    assert all(line.startswith(OUTSIDE_LOGGING) for line in others), others
    access = [e for e in log_entries(traced) if e["logger"] == "ACCESS_LOG"]
    # TorchServe's own access line has no request id; the plugin's have one
    assert any("/predictions/mymodel" in e["message"] and " 200 " in e["message"] for e in access)
    assert any("request_id=v2-unknown" in e["message"] for e in access)
