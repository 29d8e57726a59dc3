"""A real TorchServe started through docker/entrypoint.sh with config.properties, on free ports."""

import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests

from benchmarks.torchserve_defaults import repacked_archive
from benchmarks.variants import variant_config
from harness.torchserve import torchserve
from model.config import ROOT
from model.data.request_records import request_records
from model.data.split import split_rows
from tests.waiting import settled_batch_size

SAMPLE = (ROOT / "sample_input.json").read_bytes()
JSON = {"Content-Type": "application/json"}


def predict(server, body, headers=JSON, version=""):
    url = f"{server.inference_url}/predictions/mymodel" + (f"/{version}" if version else "")
    return requests.post(url, data=body, headers=headers, timeout=30)


def workers(server):
    described = requests.get(f"{server.management_url}/models/mymodel", timeout=10).json()[0]
    return {worker["pid"]: worker["status"] for worker in described["workers"]}


@pytest.fixture(scope="module")
def held_out_rows(table):
    return split_rows(table, "test").sample(200, random_state=7)


def test_the_models_workers_are_ready_with_the_trained_version(server, metrics):
    described = requests.get(f"{server.management_url}/models/mymodel", timeout=10).json()[0]
    assert described["modelVersion"] == metrics["model_version"]
    # adaptive batching (on in config.properties) shows the batch size in force: a worker's share of the
    # queue, 1 once nothing has queued for 100 ms (other tests' traffic may have just ended)
    assert settled_batch_size(server, 1) == 1
    assert len(described["workers"]) == described["minWorkers"] >= 1
    assert {w["status"] for w in described["workers"]} == {"READY"}


def test_management_lists_the_model(server):
    models = requests.get(f"{server.management_url}/models", timeout=10).json()["models"]
    assert [m["modelName"] for m in models] == ["mymodel"]


def test_sample_input_is_answered(server, metrics, schema):
    reply = predict(server, SAMPLE)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert set(answer) == {"late_probability", "late", "model_version"}
    assert 0 < answer["late_probability"] < 1
    assert answer["late"] == (answer["late_probability"] >= schema["x-model"]["threshold"])
    assert answer["model_version"] == metrics["model_version"]


def test_a_client_without_content_type_is_answered(server):
    reply = predict(server, SAMPLE, headers={"Content-Type": ""})
    assert reply.status_code == 200, reply.text


def test_served_probabilities_equal_offline_batch_inference(server, settings, held_out_rows, tmp_path):
    """Parity: real test-month records, served as one list and scored offline by
    `python -m model.artifact.predict` from a CSV, with the same model.pt."""
    records = request_records(held_out_rows, settings.features)
    reply = predict(server, json.dumps(records))
    assert reply.status_code == 200, reply.text
    served = [answer["late_probability"] for answer in reply.json()]

    pd.DataFrame(records).to_csv(tmp_path / "records.csv", index=False)
    command = [
        sys.executable,
        "-m",
        "model.artifact.predict",
        "--input_path",
        str(tmp_path / "records.csv"),
        "--output_path",
        str(tmp_path / "scored.csv"),
        "--export_dir",
        str(settings.paths.export_dir),
    ]
    subprocess.run(command, check=True, cwd=ROOT, timeout=120)
    offline = pd.read_csv(tmp_path / "scored.csv")["late_probability"].tolist()
    assert len(served) == len(offline) == len(records)
    assert max(abs(a - b) for a, b in zip(served, offline)) <= 1e-6


def test_the_onnx_runtime_answers_as_torchscript(server, settings, metrics, held_out_rows, tmp_path):
    """The handler option runtime: onnx (the archive's model.onnx in ONNX Runtime) behind a real
    TorchServe: the same answers as the default runtime (model.pt in torch) within 1e-6, on test-month
    records in one list and one by one; explanations still come from model.pt."""
    archive = repacked_archive(
        settings.paths.model_dir, tmp_path / "model-store", variant_config({"handler": {"runtime": "onnx"}})
    )
    with zipfile.ZipFile(archive) as packed:
        assert "model.onnx" in packed.namelist()
    records = request_records(held_out_rows, settings.features)
    default = predict(server, json.dumps(records))
    assert default.status_code == 200, default.text
    with torchserve(archive.parent, tmp_path / "onnx", plugins=None) as onnx_server:
        described = requests.get(f"{onnx_server.management_url}/models/mymodel", timeout=10).json()[0]
        assert described["modelVersion"] == metrics["model_version"]
        served = predict(onnx_server, json.dumps(records))
        assert served.status_code == 200, served.text
        alone = [predict(onnx_server, json.dumps(record)).json() for record in records[:20]]
        explained = requests.post(f"{onnx_server.inference_url}/explanations/mymodel", json=records[0], timeout=60)
    answers, expected = served.json(), default.json()
    assert len(answers) == len(expected) == len(records)
    assert max(abs(a["late_probability"] - b["late_probability"]) for a, b in zip(answers, expected)) <= 1e-6
    assert [a["late"] for a in answers] == [b["late"] for b in expected]
    assert {a["model_version"] for a in answers} == {metrics["model_version"]}
    assert max(abs(a["late_probability"] - b["late_probability"]) for a, b in zip(alone, expected)) <= 1e-6
    assert explained.status_code == 200, explained.text


def test_concurrent_requests_each_get_their_own_answer(server, settings, held_out_rows):
    """Requests batched together by TorchServe, good and bad mixed, keep their own answers."""
    records = request_records(held_out_rows.head(60), settings.features)
    expected = [a["late_probability"] for a in predict(server, json.dumps(records)).json()]

    def send(i):
        if i % 3 == 2:
            return i, predict(server, json.dumps({**records[i], "distance": -1}))
        return i, predict(server, json.dumps(records[i]))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(len(records))))
    for i, reply in results:
        if i % 3 == 2:
            assert reply.status_code == 400 and reply.json()["errors"][0]["field"] == "distance"
        else:
            assert reply.status_code == 200, reply.text
            assert reply.json()["late_probability"] == pytest.approx(expected[i], abs=1e-6)


BAD_REQUESTS = [
    (b"{not json", JSON, 400),
    (b"", JSON, 400),
    (b'{"carrier": "UA"}', JSON, 400),
    (b'{"carrier": NaN}', JSON, 400),
    (SAMPLE.replace(b'"distance": 719', b'"distance": "far"'), JSON, 400),
    (SAMPLE.replace(b'"month": 12', b'"month": 1e999'), JSON, 400),
    (SAMPLE.replace(b'"carrier": "UA"', b'"carrier": "UA", "tail": 1'), JSON, 400),
    (b"[" + SAMPLE + b', {"month": 40}]', JSON, 400),
    (b"\xff\xfe\x00", JSON, 400),
    (b"[" * 50000 + b"]" * 50000, JSON, 400),
    (SAMPLE, {"Content-Type": "text/csv"}, 415),
    (SAMPLE, {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    (b"x" * 1_100_000, JSON, 413),
]


@pytest.mark.parametrize(
    ("body", "headers", "status"), BAD_REQUESTS, ids=[f"bad-{i}" for i in range(len(BAD_REQUESTS))]
)
def test_bad_input_gets_a_4xx_and_never_a_dead_worker(server, body, headers, status):
    before = workers(server)
    reply = predict(server, body, headers=headers)
    assert reply.status_code == status, reply.text[:300]
    if status != 413:  # the frontend itself refuses oversized bodies, with no body
        assert "error" in reply.json()
    assert workers(server) == before  # same worker processes, all READY
    assert predict(server, SAMPLE).status_code == 200


def test_torchserves_own_routes_on_the_inference_port_are_what_docs_api_says(server):
    """TorchServe 0.12 sends these paths to the model whatever its settings, as aliases of
    /predictions and /explanations: they take the native body, not v2 tensors (the v2 protocol is
    on the plugin's port). Its own /v2 health and metadata routes are off
    (ts_open_inference_protocol is unset): 404 in TorchServe's shape, as for any unknown path."""
    url = server.inference_url
    solo = predict(server, SAMPLE).json()
    for path in (
        "/v2/models/mymodel/infer",
        "/v1/models/mymodel:predict",
        "/invocations?model_name=mymodel",
        "/models/mymodel/invoke",
    ):
        assert requests.post(url + path, data=SAMPLE, headers=JSON, timeout=30).json() == solo, path
    for path in ("/v2/models/mymodel/explain", "/v1/models/mymodel:explain"):
        assert requests.post(url + path, data=SAMPLE, headers=JSON, timeout=60).json()["attributions"], path
    tensors = requests.post(url + "/v2/models/mymodel/infer", data=json.dumps({"inputs": []}), headers=JSON, timeout=30)
    assert tensors.status_code == 400 and tensors.json()["type"] == "invalid_request"
    assert "'inputs'" in tensors.json()["error"]
    for path in ("/v2/health/ready", "/v2/models/mymodel", "/v2/models/AAA", "/nothing"):
        reply = requests.get(url + path, timeout=30)
        assert reply.status_code == 404 and reply.json()["type"] == "ResourceNotFoundException", (path, reply.text)
    unknown = requests.post(url + "/predictions/nomodel", data=SAMPLE, headers=JSON, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["type"] == "ModelNotFoundException"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/x.mar",
        "http://127.0.0.1:1/x.mar",
        "file:///etc/passwd",
        "FILE:///tmp/x.mar",
        "../mymodel.mar",
        "s3://bucket/x.mar",
        "missing.mar",
    ],
)
def test_models_are_registered_only_from_the_model_store(server, url):
    """allowed_urls matches no URL: nothing is downloaded (TorchServe's SSRF history), no path escapes
    the store; only an archive already in the model store can be registered (the registry's versions)."""
    reply = requests.post(f"{server.management_url}/models", params={"url": url}, timeout=10)
    assert 400 <= reply.status_code < 500, reply.text
    assert predict(server, SAMPLE).status_code == 200


def test_prometheus_metrics_are_served(server):
    predict(server, SAMPLE)
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    assert "ts_inference_requests_total" in text


def test_each_worker_logs_and_exposes_the_model_version_it_serves(server, metrics):
    """One line per worker start (event=model_loaded) and the model_info gauge, labelled with the
    version, on the metrics port."""
    version = metrics["model_version"]
    loaded = [line for line in server.log.read_text().splitlines() if "event=model_loaded" in line]
    assert len(loaded) >= len(workers(server))
    assert all(line.endswith(f"event=model_loaded model=mymodel model_version={version}") for line in loaded), loaded
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    info = [line for line in text.splitlines() if line.startswith("model_info{")]
    assert info and all(f'model_version="{version}"' in line and float(line.rsplit(" ", 1)[1]) == 1 for line in info), (
        info
    )


def test_the_images_build_time_selfcheck_passes_on_the_archive(archive):
    command = [
        sys.executable,
        str(ROOT / "docker" / "selfcheck.py"),
        "--archive",
        str(archive),
        "--sample",
        str(ROOT / "sample_input.json"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_the_images_healthcheck_sees_the_ready_model(server):
    command = [sys.executable, str(ROOT / "docker" / "healthcheck.py"), "--management-url", server.management_url]
    assert subprocess.run(command, timeout=30).returncode == 0
    assert subprocess.run([*command, "--model", "nomodel"], timeout=30).returncode == 1


def test_workers_can_be_scaled_from_loopback_without_a_restart(server):
    """Last in this module: it changes the shared server and restores it."""
    url = f"{server.management_url}/models/mymodel"
    original = len(workers(server))
    try:
        reply = requests.put(url, params={"min_worker": 1, "max_worker": 1, "synchronous": "true"}, timeout=120)
        assert reply.status_code == 200, reply.text
        assert len(workers(server)) == 1
        assert predict(server, SAMPLE).status_code == 200
    finally:
        requests.put(url, params={"min_worker": original, "max_worker": original, "synchronous": "true"}, timeout=120)
    assert list(workers(server).values()) == ["READY"] * original


def test_the_entrypoint_refuses_to_start_without_an_archive(tmp_path):
    result = subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "TS_MODEL_STORE": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "mymodel.mar is missing" in result.stderr
