"""A successor to TorchServe: model.onnx in ONNX Runtime behind the project's own v2 contract
(serving/onnx_server.py), called with the Triton client as KServe and Triton clients call it. Its
answers, metadata and refusals equal the TorchServe's (the v2 plugin) for the same requests, and
each of its bounds holds: bytes per body, seconds to receive one, open connections."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import np_to_triton_dtype

from harness.torchserve import stop
from model.artifact.onnx_export import export_onnx
from model.config import ROOT
from model.data.request_records import request_records
from model.data.split import split_rows
from model.lifecycle.ports import free_ports

JSON = {"Content-Type": "application/json"}
MAX_CONNECTIONS = 6
BODY_SECONDS = 2.0


@pytest.fixture(scope="module")
def onnx_server(settings, metrics, tmp_path_factory):
    """serving.onnx_server on a free port with small bounds; ready once /v2/health/ready answers."""
    work = tmp_path_factory.mktemp("onnx-server")
    export_onnx(settings.paths.model_dir, work)
    (port,) = free_ports(1)
    log = work / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.onnx_server",
                "--export-dir",
                str(work),
                "--port",
                str(port),
                "--max-connections",
                str(MAX_CONNECTIONS),
                "--body-seconds",
                str(BODY_SECONDS),
            ],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply,
            ):
                if reply.status == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def clients(onnx_server, server):
    """Triton clients of the ONNX server and of the TorchServe (its v2 plugin)."""
    return {
        "onnx": triton.InferenceServerClient(url=onnx_server, network_timeout=60),
        "torchserve": triton.InferenceServerClient(url=server.oip_url.removeprefix("http://"), network_timeout=60),
    }


@pytest.fixture(scope="module")
def flights(table, settings) -> list[dict]:
    return request_records(split_rows(table, "test").sample(300, random_state=5), settings.features)


def v2_inputs(metadata: dict, records: list[dict]) -> list[triton.InferInput]:
    """One tensor per field, binary data: BYTES for categories, FP64 with NaN for missing numbers."""
    inputs = []
    for tensor in metadata["inputs"]:
        values = [record.get(tensor["name"]) for record in records]
        if tensor["datatype"] == "BYTES":
            array = np.array([value or "" for value in values], dtype=np.object_)
        else:
            array = np.array([np.nan if value is None else value for value in values], dtype=np.float64)
        infer_input = triton.InferInput(tensor["name"], [len(records)], np_to_triton_dtype(array.dtype))
        infer_input.set_data_from_numpy(array, binary_data=True)
        inputs.append(infer_input)
    return inputs


def test_the_metadata_is_torchserves(clients):
    assert clients["onnx"].is_server_ready() and clients["onnx"].is_model_ready("mymodel")
    onnx, torchserve = (client.get_model_metadata("mymodel") for client in (clients["onnx"], clients["torchserve"]))
    assert {key: onnx[key] for key in ("name", "versions", "inputs", "outputs")} == {
        key: torchserve[key] for key in ("name", "versions", "inputs", "outputs")
    }


def test_v2_answers_equal_torchserves_on_test_month_flights(clients, flights, schema):
    results = {}
    for name, client in clients.items():
        metadata = client.get_model_metadata("mymodel")
        results[name] = client.infer("mymodel", v2_inputs(metadata, flights), request_id="flights")
    onnx, torchserve = results["onnx"], results["torchserve"]
    for result in (onnx, torchserve):
        assert result.get_response()["id"] == "flights"
        assert result.get_response()["model_version"] == schema["x-model"]["version"]
    served = {name: result.as_numpy("late_probability") for name, result in results.items()}
    assert served["onnx"].shape == (len(flights),)
    assert np.abs(served["onnx"] - served["torchserve"]).max() <= 1e-6
    threshold = schema["x-model"]["threshold"]
    clear = np.abs(served["torchserve"] - threshold) > 1e-6
    assert (onnx.as_numpy("late")[clear] == torchserve.as_numpy("late")[clear]).all()


@pytest.mark.parametrize(
    "payload",
    [
        {"inputs": [{"name": "carrier", "datatype": "BYTES", "shape": [1], "data": ["UA"]}]},
        {"inputs": [{"name": "nope", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        {"inputs": [{"name": "hour", "datatype": "FP64", "shape": [2], "data": [1.0]}]},
        {"inputs": []},
        [1, 2, 3],
    ],
    ids=["missing-fields", "unknown-input", "shape-mismatch", "no-inputs", "not-an-object"],
)
def test_refusals_are_torchserves_word_for_word(onnx_server, server, payload):
    replies = [
        requests.post(f"{base}/v2/models/mymodel/infer", data=json.dumps(payload), headers=JSON, timeout=30)
        for base in (f"http://{onnx_server}", server.oip_url)
    ]
    assert replies[0].status_code == replies[1].status_code == 400
    assert replies[0].json() == replies[1].json()


def test_the_native_json_route_answers_as_torchserve(onnx_server, server, flights):
    records = flights[:50]
    answers = [
        requests.post(f"{base}/predictions/mymodel", data=json.dumps(records), headers=JSON, timeout=30).json()
        for base in (f"http://{onnx_server}", server.inference_url)
    ]
    onnx, torchserve = (np.array([answer["late_probability"] for answer in reply]) for reply in answers)
    assert np.abs(onnx - torchserve).max() <= 1e-6


def test_a_body_over_the_limit_gets_a_413(onnx_server):
    reply = requests.post(
        f"http://{onnx_server}/v2/models/mymodel/infer", data=b" " * (1024 * 1024 + 1), headers=JSON, timeout=30
    )
    assert reply.status_code == 413 and reply.json()["type"] == "payload_too_large"


def whole_reply(connection: socket.socket) -> str:
    """The reply's head and its body, however many reads they arrive in (until its Content-Length)."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := connection.recv(65536)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(body) < length and (chunk := connection.recv(65536)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_a_body_that_does_not_arrive_in_time_gets_a_408(onnx_server):
    host, port = onnx_server.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /v2/models/mymodel/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"inputs"'
        )
        started = time.monotonic()
        reply = whole_reply(connection)
    assert reply.startswith("HTTP/1.1 408") and '"type": "timeout"' in reply
    assert BODY_SECONDS - 0.5 <= time.monotonic() - started < BODY_SECONDS + 20


def test_connections_beyond_the_limit_get_a_503_and_the_server_recovers(onnx_server):
    host, port = onnx_server.split(":")
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):  # idle connections count against the limit
            held.append(socket.create_connection((host, int(port)), timeout=30))
        reply = requests.get(f"http://{onnx_server}/v2/health/live", timeout=30)
        assert reply.status_code == 503
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 30
    while requests.get(f"http://{onnx_server}/v2/health/live", timeout=30).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_unknown_routes_answer_in_the_error_shape(onnx_server):
    reply = requests.get(f"http://{onnx_server}/v2/models/nomodel", timeout=30)
    assert reply.status_code == 404
    assert set(reply.json()) >= {"code", "type", "error", "errors"} and reply.json()["type"] == "not_found"
