"""The Open Inference Protocol v2 as KServe and Triton clients call it: tritonclient.http against a
real TorchServe with the project's frontend plugin (handler/frontend), hand-made JSON for refusals,
and readiness that follows the workers (where TorchServe's own /v2/health/ready does not)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from handler.frontend.build_plugin import JAR, SERVICE, build_plugin, plugin_class
from harness.torchserve import Server, healthcheck, stop, torchserve, torchserve_command
from model.config import ROOT
from model.data.request_records import request_records
from model.data.split import split_rows
from tests.waiting import counted, settled

JSON = {"Content-Type": "application/json"}
SAMPLE = json.loads((ROOT / "sample_input.json").read_text())


@pytest.fixture(scope="module")
def oip(archive, plugins, tmp_path_factory):
    """A TorchServe with the plugin, and the host:port of its v2 routes."""
    with torchserve(archive.parent, tmp_path_factory.mktemp("oip-torchserve"), plugins=plugins) as server:
        yield server, server.oip_url.removeprefix("http://")


@pytest.fixture(scope="module")
def client(oip) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=oip[1], network_timeout=60)


@pytest.fixture(scope="module")
def held_out_records(table, settings) -> list[dict]:
    rows = split_rows(table, "test").sample(120, random_state=11)
    return request_records(rows, settings.features)


def v2_datatype(metadata: dict, name: str) -> str:
    return next(tensor["datatype"] for tensor in metadata["inputs"] if tensor["name"] == name)


def triton_inputs(metadata: dict, records: list[dict], binary: bool) -> list[triton.InferInput]:
    """One tensor per field the records carry, shape [n]: BYTES for categories ("" = missing), the
    advertised number type for complete numeric columns, FP64 with NaN for the others."""
    inputs = []
    for tensor in metadata["inputs"]:
        if all(tensor["name"] not in record for record in records):
            continue  # a field no record has: left out, so missing for all
        values = [record.get(tensor["name"]) for record in records]
        if tensor["datatype"] == "BYTES":
            array = np.array([value or "" for value in values], dtype=np.object_)
        elif any(value is None for value in values):
            array = np.array([np.nan if value is None else value for value in values], dtype=np.float64)
        else:
            array = np.array(values, dtype=np.int64 if tensor["datatype"] == "INT64" else np.float64)
        infer_input = triton.InferInput(tensor["name"], [len(records)], np_to_triton_dtype(array.dtype))
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    return inputs


def without_missing_numbers(records: list[dict], numeric: list[str]) -> list[dict]:
    """JSON data has no NaN: keep the numeric fields every record has (the others are missing for all)."""
    complete = [name for name in numeric if all(record.get(name) is not None for record in records)]
    return [{k: v for k, v in record.items() if k not in numeric or k in complete} for record in records]


def predictions(server: Server, records: list[dict]) -> list[float]:
    reply = requests.post(
        f"{server.inference_url}/predictions/mymodel", data=json.dumps(records), headers=JSON, timeout=30
    )
    assert reply.status_code == 200, reply.text
    return [answer["late_probability"] for answer in reply.json()]


def workers(server: Server) -> dict[int, str]:
    return {worker["pid"]: worker["status"] for worker in healthcheck().workers(server.management_url, "mymodel")}


def test_the_server_is_live_ready_and_describes_itself(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "torchserve" and metadata["version"]


def test_the_model_is_ready_and_its_metadata_is_the_request_schema(client, schema, metrics):
    assert client.is_model_ready("mymodel")
    assert not client.is_model_ready("nomodel")
    metadata = client.get_model_metadata("mymodel")
    facts = schema["x-model"]
    assert metadata["name"] == "mymodel" and metadata["versions"] == [metrics["model_version"]]
    assert [tensor["name"] for tensor in metadata["inputs"]] == facts["categorical"] + facts["numeric"]
    for tensor in metadata["inputs"]:
        types = schema["properties"][tensor["name"]]["type"]
        expected = "BYTES" if tensor["name"] in facts["categorical"] else "INT64" if "integer" in types else "FP64"
        assert tensor["datatype"] == expected and tensor["shape"] == [-1]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        f"{facts['target']}_probability": "FP64",
        facts["target"]: "BOOL",
    }


@pytest.mark.parametrize("binary", [False, True], ids=["json-data", "binary-data"])
def test_inference_with_triton_inputs_equals_the_json_api(client, oip, held_out_records, schema, metrics, binary):
    """Real test-month flights. Binary data says missing with NaN; JSON data cannot carry NaN, so that
    run leaves out the numeric fields some flight lacks (for /predictions too)."""
    records = held_out_records if binary else without_missing_numbers(held_out_records, schema["x-model"]["numeric"])
    metadata = client.get_model_metadata("mymodel")
    result = client.infer("mymodel", triton_inputs(metadata, records, binary), request_id="flights-1")
    served = result.as_numpy("late_probability")
    assert result.get_response()["id"] == "flights-1"
    assert result.get_response()["model_version"] == metrics["model_version"]
    assert served.shape == (len(records),)
    assert np.allclose(served, predictions(oip[0], records), atol=1e-6)
    assert (result.as_numpy("late") == (served >= schema["x-model"]["threshold"])).all()


def test_only_the_requested_outputs_come_back(client, held_out_records):
    records = held_out_records[:5]
    metadata = client.get_model_metadata("mymodel")
    result = client.infer(
        "mymodel",
        triton_inputs(metadata, records, binary=True),
        outputs=[triton.InferRequestedOutput("late", binary_data=False)],
    )
    assert [output["name"] for output in result.get_response()["outputs"]] == ["late"]
    assert result.as_numpy("late_probability") is None


def sample_inputs(client, records):
    metadata = client.get_model_metadata("mymodel")
    return [
        {
            "name": t["name"],
            "datatype": t["datatype"],
            "shape": [len(records)],
            "data": [record.get(t["name"]) for record in records],
        }
        for t in metadata["inputs"]
    ]


def post_v2(oip, payload) -> requests.Response:
    return requests.post(f"http://{oip[1]}/v2/models/mymodel/infer", data=json.dumps(payload), headers=JSON, timeout=30)


def replace(inputs, name, **changes):
    return [{**tensor, **changes} if tensor["name"] == name else tensor for tensor in inputs]


BAD_TENSORS = [
    ("wrong-datatype", lambda inputs: replace(inputs, "carrier", datatype="FP64"), "input 'carrier'"),
    ("bool-for-a-number", lambda inputs: replace(inputs, "distance", datatype="BOOL"), "input 'distance'"),
    ("missing-input", lambda inputs: [t for t in inputs if t["name"] != "origin"], "input 'origin'"),
    ("mismatched-shapes", lambda inputs: replace(inputs, "hour", shape=[1], data=[9]), "hour [1]"),
    ("shape-and-data-disagree", lambda inputs: replace(inputs, "month", shape=[3]), "input 'month'"),
    ("out-of-range-element", lambda inputs: replace(inputs, "month", data=[1, 13]), "input 'month', element 1"),
    ("fractional-integer", lambda inputs: replace(inputs, "minute", data=[0, 7.5]), "input 'minute', element 1"),
    (
        "unknown-input",
        lambda inputs: [*inputs, {"name": "tail", "datatype": "BYTES", "shape": [2], "data": ["N1", "N2"]}],
        "'tail'",
    ),
]


@pytest.mark.parametrize(("change", "named"), [case[1:] for case in BAD_TENSORS], ids=[c[0] for c in BAD_TENSORS])
def test_bad_tensors_get_a_400_json_error_naming_the_input(client, oip, change, named):
    records = [SAMPLE] * 2
    before = workers(oip[0])
    reply = post_v2(oip, {"id": "bad", "inputs": change(sample_inputs(client, records))})
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert {"code", "type", "error", "errors"} <= set(error) and error["code"] == 400, error
    assert named in error["error"] and error["type"] == "invalid_request" and error["errors"], error
    assert workers(oip[0]) == before


def test_tritonclient_raises_the_servers_error(client):
    metadata = client.get_model_metadata("mymodel")
    record = SAMPLE
    inputs = [i for i in triton_inputs(metadata, [record], binary=True) if i.name() != "dest"]
    with pytest.raises(InferenceServerException, match="'dest'") as raised:
        client.infer("mymodel", inputs)
    assert raised.value.status() == "400"


def test_malformed_bodies_unknown_models_and_routes_get_json_errors(oip):
    base = f"http://{oip[1]}"
    cases = [
        requests.post(f"{base}/v2/models/mymodel/infer", data=b"{not json", headers=JSON, timeout=30),
        requests.post(f"{base}/v2/models/mymodel/infer", data=b"x" * 1_100_000, headers=JSON, timeout=30),
        requests.post(f"{base}/v2/models/nomodel/infer", data=b"{}", headers=JSON, timeout=30),
        requests.get(f"{base}/v2/models/nomodel", timeout=30),
        requests.get(f"{base}/v2/models/mymodel/versions/0.0/ready", timeout=30),
        requests.post(f"{base}/v2/models/mymodel/explain", data=b"{}", headers=JSON, timeout=30),
        requests.get(f"{base}/predictions/mymodel", timeout=30),
    ]
    assert [reply.status_code for reply in cases] == [400, 413, 404, 404, 404, 404, 404]
    assert all(isinstance(reply.json()["error"], str) for reply in cases)


def test_crafted_binary_header_lengths_fail_only_their_own_requests(client, oip):
    """Rounds of v2 requests with a crafted Inference-Header-Content-Length released together with
    other clients' /predictions, so TorchServe batches them together: the crafted ones get a 400
    naming the header, the others their own answer, and no worker restarts."""
    server = oip[0]
    body = json.dumps({"inputs": sample_inputs(client, [SAMPLE])}).encode()
    crafted = ["\u00b2", "9" * 5000, "-5", str(len(body) + 1)]
    victims = 8
    solo = predictions(server, [SAMPLE])[0]
    before = workers(server)

    def victim(barrier: threading.Barrier) -> requests.Response:
        barrier.wait(timeout=30)
        return requests.post(
            f"{server.inference_url}/predictions/mymodel", data=json.dumps(SAMPLE), headers=JSON, timeout=30
        )

    def attacker(barrier: threading.Barrier, length: str) -> requests.Response:
        barrier.wait(timeout=30)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": length}
        return requests.post(f"http://{oip[1]}/v2/models/mymodel/infer", data=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(victims + len(crafted)) as pool:
        for _ in range(5):
            barrier = threading.Barrier(victims + len(crafted))
            attacks = [pool.submit(attacker, barrier, length) for length in crafted]
            answers = [pool.submit(victim, barrier) for _ in range(victims)]
            for future in answers:
                assert future.result().status_code == 200, future.result().text[:300]
                assert future.result().json()["late_probability"] == pytest.approx(solo, abs=1e-6)
            for length, future in zip(crafted, attacks):
                reply = future.result()
                assert reply.status_code == 400, (length[:20], reply.text[:300])
                assert "Inference-Header-Content-Length" in reply.json()["error"], reply.text[:300]
                assert reply.json()["type"] == "bad_header", reply.text[:300]
    assert workers(server) == before


def readiness(server: Server, oip: str) -> tuple[bool, int, int, int | None]:
    """(workers READY per the management API, /v2/health/ready, /v2/models/mymodel/ready,
    TorchServe's own /v2/health/ready on the inference port or None where it is off)."""
    ours = [
        requests.get(f"http://{oip}{path}", timeout=10).status_code
        for path in ("/v2/health/ready", "/v2/models/mymodel/ready")
    ]
    theirs = requests.get(f"{server.inference_url}/v2/health/ready", timeout=10).status_code
    return healthcheck().model_ready(server.management_url, "mymodel"), *ours, theirs


def test_readiness_follows_the_workers_from_start_to_scale_down(archive, plugins, tmp_path):
    """The plugin answers from the first seconds of start, before the workers are READY, and says
    ready exactly when they are; TorchServe's own route (switched on here for comparison with
    TS_OPEN_INFERENCE_PROTOCOL=oip) says ready throughout, even with no worker at all."""
    command, env, ports, oip = torchserve_command(
        archive.parent, tmp_path, {"TS_OPEN_INFERENCE_PROTOCOL": "oip"}, plugins=plugins
    )
    oip = oip.removeprefix("http://")
    with open(tmp_path / "torchserve.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(*(f"http://127.0.0.1:{port}" for port in ports), process, tmp_path / "torchserve.log")
    try:
        seen = []  # (READY per management before, /v2/health/ready, /v2/models/mymodel/ready, READY after)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (seen and seen[-1][3] and seen[-1][1] == 200):
            assert process.poll() is None, server.log_tail()
            with contextlib.suppress(requests.ConnectionError):
                before = management_ready(server)
                server_ready = requests.get(f"http://{oip}/v2/health/ready", timeout=10).status_code
                model_ready = requests.get(f"http://{oip}/v2/models/mymodel/ready", timeout=10).status_code
                seen.append((before, server_ready, model_ready, management_ready(server)))
            time.sleep(0.05)
        starting = [s for s in seen if not s[0] and not s[3]]
        assert starting, f"the workers were READY before the first answer: {seen}"
        assert all(s[1:3] == (400, 400) for s in starting), seen
        assert all(s[1:3] == (200, 200) for s in seen if s[0] and s[3]), seen
        assert readiness(server, oip) == (True, 200, 200, 200)

        url = f"{server.management_url}/models/mymodel"
        scaled = requests.put(url, params={"min_worker": 0, "max_worker": 0, "synchronous": "true"}, timeout=120)
        assert scaled.status_code == 200, scaled.text
        assert readiness(server, oip) == (False, 400, 400, 200)  # TorchServe's own route says ready
        requests.put(url, params={"min_worker": 1, "max_worker": 1, "synchronous": "true"}, timeout=120)
        assert readiness(server, oip) == (True, 200, 200, 200)
    finally:
        stop(process)


def management_ready(server: Server) -> bool:
    """The model has a READY worker, per the management API (ConnectionError while it is not up)."""
    described = requests.get(f"{server.management_url}/models/mymodel", timeout=10)
    states = [worker["status"] for worker in described.json()[0]["workers"]] if described.ok else []
    return "READY" in states


def test_v2_inference_is_counted_like_the_json_api(client, oip, held_out_records):
    """ts_inference_requests_total counts v2 requests, the handler's metrics their predicted records."""
    metrics = oip[0].metrics_url
    requests_before, records_before = (
        counted(metrics, "ts_inference_requests_total"),
        counted(metrics, "model_predictions_total"),
    )
    metadata = client.get_model_metadata("mymodel")
    for records in (held_out_records[:7], held_out_records[7:10]):
        client.infer("mymodel", triton_inputs(metadata, records, binary=True))
    # the frontend reads the workers' metric lines as they come
    assert settled(lambda: counted(metrics, "model_predictions_total"), records_before + 10, 30) == records_before + 10
    assert counted(metrics, "ts_inference_requests_total") == requests_before + 2


def test_the_plugins_build_into_one_jar_that_replaces_the_former_one(tmp_path):
    """Both plugins (the v2 endpoint, adaptive batching) in one jar; a jar an earlier build left
    under the former name goes, or TorchServe would load every plugin twice."""
    (tmp_path / "mymodel-oip.jar").write_bytes(b"an earlier build")
    jar = build_plugin(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [JAR] == [jar.name]
    sources = sorted((ROOT / "handler" / "frontend").glob("*.java"))
    with zipfile.ZipFile(jar) as packed:
        assert packed.read(SERVICE).decode().split() == [plugin_class(source) for source in sources]
    assert {source.stem for source in sources} == {"OpenInferenceProtocol", "AdaptiveBatching"}
