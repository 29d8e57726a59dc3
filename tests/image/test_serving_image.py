"""mymodel-serve as users run it: the README's container commands as they stand, `docker run`
(podman here), its HEALTHCHECK, its answers against the native server's, bad input, its user and
files, the Kubernetes manifests' read-only root, stopping, the management API from the host, and
load."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from harness import container
from loadtest.malformed import malformed_requests
from loadtest.payloads import real_records
from loadtest.scenarios import run_load_tests
from model.data.prepare import load_table
from tests.image import documented

SAMPLE = (container.ROOT / "sample_input.json").read_bytes()
JSON = {"Content-Type": "application/json"}
HOME = "/home/model-server"


def predict(url: str, body: bytes, path: str = "predictions/mymodel", timeout: float = 30) -> requests.Response:
    return requests.post(f"{url}/{path}", data=body, headers=JSON, timeout=timeout)


def probabilities(url: str, records: list[dict]) -> list[float]:
    replies = []
    for start in range(0, len(records), 100):
        reply = predict(url, json.dumps(records[start : start + 100]).encode())
        assert reply.status_code == 200, reply.text[:300]
        replies += [answer["late_probability"] for answer in reply.json()]
    return replies


def worker_pids(served: container.Container) -> dict[int, str]:
    return {worker["pid"]: worker["status"] for worker in served.describe_model()[0]["workers"]}


# --- the README's commands, start, health and answers --------------------------------------


def test_the_readmes_container_commands_serve_the_model_make_train_trains(engine, checkout, native, write_report):
    """Typed as the README shows them, in a fresh checkout: build (trained in the build, cached
    from the session's build), run with every documented port published, wait, ask, stop. The
    answer is the native server's: the same model version, so the same weights."""
    typed = documented.as_typed_here(documented.block_with(documented.README, "docker run"))
    assert set(typed.ports) == {container.INFERENCE, container.MANAGEMENT, container.METRICS, container.OIP}
    try:
        done, seconds = documented.run(typed.script, checkout, timeout=900)
    finally:
        container.run_engine("rm", "--force", typed.name, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # curl's answer has no newline of its own: the next command's output follows it on its line
    answer, _ = json.JSONDecoder().raw_decode(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    native_answer = predict(native.inference_url, SAMPLE).json()
    write_report("readme", {"seconds": round(seconds, 1), "answer": answer, "native": native_answer})
    assert answer["model_version"] == native_answer["model_version"]
    assert answer["late"] == native_answer["late"]
    assert answer["late_probability"] == pytest.approx(native_answer["late_probability"], abs=1e-6)


def test_the_healthcheck_turns_healthy_only_once_the_workers_are_ready(serving, write_report):
    _, polls = serving
    assert polls[0][1] is False, "healthy at the very first poll: the check cannot have waited for the workers"
    assert polls[-1][1] is True
    assert all(ready for _, healthy, ready in polls if healthy), polls
    write_report("start", {"healthy_after_s": round(polls[-1][0], 1), "polls": len(polls)})


def test_the_sample_request_is_answered_on_the_published_port(serving):
    served, _ = serving
    reply = predict(served.url(), SAMPLE)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert set(answer) == {"late_probability", "late", "model_version"}
    assert 0 < answer["late_probability"] < 1


def test_the_images_answers_equal_the_native_servers_for_the_same_weights(serving, native, pipeline, write_report):
    """The image re-exports model.pt with its own torch and Python (2.4 / 3.9); the native server
    runs the export of torch 2.13 / Python 3.11."""
    served, _ = serving
    records = real_records(load_table(pipeline), pipeline.features, 400, seed=7)
    ours = np.array(probabilities(served.url(), records))
    theirs = np.array(probabilities(native.inference_url, records))
    difference = float(np.abs(ours - theirs).max())
    version = predict(served.url(), SAMPLE).json()["model_version"]
    write_report(
        "parity",
        {
            "records": len(records),
            "max_abs_difference": difference,
            "model_version": version,
            "native_model_version": predict(native.inference_url, SAMPLE).json()["model_version"],
        },
    )
    assert difference <= 1e-6
    assert version == predict(native.inference_url, SAMPLE).json()["model_version"]


def test_malformed_requests_get_only_4xx_json_and_no_worker_restarts(serving):
    served, _ = serving
    before = worker_pids(served)
    for request in malformed_requests():
        reply = requests.post(
            f"{served.url()}/predictions/mymodel", data=request.body, headers=request.headers, timeout=30
        )
        assert reply.status_code == request.status, (request.name, reply.status_code, reply.text[:200])
        if not request.refused_by_frontend:
            assert reply.json()["error"], request.name
    assert worker_pids(served) == before
    assert set(before.values()) == {"READY"}


def test_explanations_v2_and_metrics_answer_on_their_ports(serving):
    served, _ = serving
    explained = predict(served.url(), SAMPLE, "explanations/mymodel", timeout=120)
    assert explained.status_code == 200, explained.text
    assert explained.json()["attributions"]
    v2 = served.url(container.OIP)
    assert requests.get(f"{v2}/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(f"{v2}/v2/models/mymodel/ready", timeout=10).status_code == 200
    metadata = requests.get(f"{v2}/v2/models/mymodel", timeout=10).json()
    inputs = [
        {
            "name": tensor["name"],
            "datatype": tensor["datatype"],
            "shape": [1],
            "data": [json.loads(SAMPLE)[tensor["name"]]],
        }
        for tensor in metadata["inputs"]
        if tensor["name"] in json.loads(SAMPLE)
    ]
    inferred = requests.post(f"{v2}/v2/models/mymodel/infer", json={"inputs": inputs}, timeout=30)
    assert inferred.status_code == 200, inferred.text
    (probability,) = next(o for o in inferred.json()["outputs"] if o["name"] == "late_probability")["data"]
    assert probability == pytest.approx(predict(served.url(), SAMPLE).json()["late_probability"], abs=1e-6)
    metrics = requests.get(f"{served.url(container.METRICS)}/metrics", timeout=10).text
    assert "ts_inference_requests_total" in metrics


def test_management_is_not_reachable_through_its_published_port_by_default(serving):
    served, _ = serving
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{served.url(container.MANAGEMENT)}/models", timeout=10)


# --- the user, the files, the read-only root -------------------------------------------------


def test_the_server_runs_as_a_non_root_user_that_cannot_write_code_config_model_or_venv(serving):
    served, _ = serving
    uids = served.exec(
        "sh", "-c", "for s in /proc/[0-9]*/status; do sed -n 's/^Uid:[[:space:]]*//p' $s; done", check=True
    ).stdout.split("\n")
    real_uids = {line.split()[0] for line in uids if line.strip()}
    (uid,) = real_uids
    assert uid != "0"
    venv = served.exec(
        "python", "-c", "import sys, ts; print(sys.prefix); print(ts.__file__)", check=True
    ).stdout.split()
    protected = [
        f"{HOME}/{path}"
        for path in (
            "",
            "model-store",
            "model-store/mymodel.mar",
            "config.properties",
            "docker",
            "docker/entrypoint.sh",
            "handler",
            "plugins",
        )
    ]
    protected += [venv[0], f"{venv[0]}/bin", f"{venv[0]}/bin/python", venv[1], venv[1].rsplit("/", 1)[0]]
    written = served.exec(
        "sh",
        "-c",
        'for p in "$@"; do if [ -d "$p" ]; then touch "$p/x" 2>/dev/null && echo "$p"; '
        'else (: >> "$p") 2>/dev/null && echo "$p"; fi; done; true',
        "sh",
        *protected,
        check=True,
    )
    assert written.stdout.split() == []
    assert len(protected) > 10 and all(served.exec("test", "-e", path).returncode == 0 for path in protected)


# What the image build packed, read inside the container with its own Python: the archive and
# its model.pt carry no path, time or random id of the build, so every build of the same
# sources gives the same bytes.
ARCHIVE_FACTS = """
import io, json, re, sys, zipfile
mar = zipfile.ZipFile(sys.argv[1])
model = zipfile.ZipFile(io.BytesIO(mar.read("model.pt")))
debug = b"".join(model.read(i) for i in model.infolist() if i.filename.endswith(".debug_pkl"))
print(json.dumps({
    "times": sorted({str(i.date_time) for z in (mar, model) for i in z.infolist()}),
    "compression": sorted({i.compress_type for z in (mar, model) for i in z.infolist()}),
    "created": json.loads(mar.read("MAR-INF/MANIFEST.json"))["createdOn"],
    "sources": sorted({p.decode() for p in re.findall(rb"[\\w./-]+[.]py", debug)}),
}))
"""


def test_the_image_builds_a_byte_stable_archive(serving):
    served, _ = serving
    facts = json.loads(served.exec("python", "-c", ARCHIVE_FACTS, f"{HOME}/model-store/mymodel.mar", check=True).stdout)
    assert facts["times"] == ["(1980, 1, 1, 0, 0, 0)"] and facts["compression"] == [0], facts
    assert facts["created"] == "01/01/1980 00:00:00"
    assert "model/training/network.py" in facts["sources"]
    assert not [source for source in facts["sources"] if source.startswith("/")], facts["sources"]


def test_it_serves_with_a_read_only_root_and_only_the_manifests_volumes_writable(engine, tmp_path, writable_mounts):
    options = ["--read-only", *writable_mounts(tmp_path)]
    with container.started(options=options) as served:
        assert predict(served.url(), SAMPLE).status_code == 200
        explained = predict(served.url(), SAMPLE, "explanations/mymodel", timeout=120)
        assert explained.status_code == 200, explained.text
        root_write = served.exec("sh", "-c", f": > {HOME}/probe")
        assert root_write.returncode != 0


def test_a_model_that_cannot_load_stops_the_container_with_a_reason(engine, tmp_path, writable_mounts):
    """The failure podman's tmpfs gave: TEMP root-owned and not writable, so no model unpacks."""
    options = ["--read-only", *writable_mounts(tmp_path, mode=0o755)]
    with container.started(options=options, wait=False) as served:
        deadline = time.monotonic() + 180
        while served.running() and time.monotonic() < deadline:
            time.sleep(1)
        assert not served.running(), "still running without its model"
        assert served.state()["ExitCode"] == 1
        assert "did not load" in served.logs()


# --- stopping ------------------------------------------------------------------------------


class Traffic:
    """Clients sending the sample request on keep-alive connections until told to stop. A request
    is answered, refused (no connection: the listener is gone, nothing was lost in flight) or
    lost (the connection broke while the request was in flight). `balancer`: stop sending once the
    container's HEALTHCHECK fails, as a load balancer or a Kubernetes Service does with a pod that
    is no longer ready."""

    def __init__(self, served: container.Container, clients: int = 8, balancer: bool = False):
        self.served, self.clients, self.balancer = served, clients, balancer
        self.stop = threading.Event()
        self.routed = threading.Event()
        self.routed.set()
        self.counts = {"answered": 0, "refused": 0, "lost": 0}
        self.lock = threading.Lock()

    def client(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            if not self.routed.is_set():
                time.sleep(0.01)
                continue
            try:
                reply = session.post(f"{self.served.url()}/predictions/mymodel", data=SAMPLE, headers=JSON, timeout=10)
                outcome = "answered" if reply.status_code == 200 else "lost"
            except requests.ConnectionError as error:
                outcome = "refused" if "refused" in str(error).lower() else "lost"
            except requests.RequestException:
                outcome = "lost"
            with self.lock:
                self.counts[outcome] += 1

    def watch(self) -> None:
        while not self.stop.is_set() and self.served.healthy():
            time.sleep(0.2)
        self.routed.clear()

    def __enter__(self) -> Traffic:
        self.pool = ThreadPoolExecutor(self.clients + 1)
        for _ in range(self.clients):
            self.pool.submit(self.client)
        if self.balancer:
            self.pool.submit(self.watch)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True)


def test_a_stop_ends_it_in_seconds_with_exit_0_under_load(engine, write_report):
    with container.started() as served, Traffic(served) as traffic:
        time.sleep(3)
        seconds, code = served.stop(grace=30)
        traffic.stop.set()
    write_report(
        "stop_under_load",
        {"stop_s": round(seconds, 2), "exit_code": code, "clients": traffic.clients, **traffic.counts},
    )
    assert code == 0
    assert seconds < 10
    assert traffic.counts["answered"] > 0


def test_a_drained_stop_behind_a_balancer_loses_no_request(engine, write_report):
    """Readiness goes false first (the HEALTHCHECK fails from the SIGTERM on) while requests are still
    answered for TS_DRAIN_SECONDS; a balancer that follows readiness then has nothing in flight."""
    with container.started(options=["--env=TS_DRAIN_SECONDS=4"]) as served, Traffic(served, balancer=True) as traffic:
        time.sleep(3)
        seconds, code = served.stop(grace=30)
        traffic.stop.set()
    write_report(
        "drained_stop",
        {"stop_s": round(seconds, 2), "exit_code": code, "drain_s": 4, "clients": traffic.clients, **traffic.counts},
    )
    assert code == 0 and seconds < 15
    assert traffic.counts["answered"] > 0
    assert traffic.counts["lost"] == traffic.counts["refused"] == 0


# --- the management API from the host ----------------------------------------------------------


def test_operators_manage_it_from_the_host_with_a_token_and_anonymous_callers_cannot(engine, tmp_path):
    token = tmp_path / "management-token"
    token.write_text("s3cret-token-for-the-test\n")
    token.chmod(0o644)
    options = [
        "--env=MANAGEMENT_TOKEN_FILE=/run/secrets/management-token",
        f"--volume={token}:/run/secrets/management-token:ro",
    ]
    with container.started(options=options, publish=(container.INFERENCE, container.MANAGEMENT)) as served:
        management = served.url(container.MANAGEMENT)
        anonymous = requests.get(f"{management}/models", timeout=10)
        assert anonymous.status_code == 401 and "Authorization" in anonymous.json()["error"]
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (
            requests.put(
                f"{management}/models/mymodel", params={"min_worker": 1}, headers=wrong, timeout=10
            ).status_code
            == 401
        )
        operator = {"Authorization": "Bearer s3cret-token-for-the-test"}
        listed = requests.get(f"{management}/models", headers=operator, timeout=10)
        assert listed.status_code == 200 and [m["modelName"] for m in listed.json()["models"]] == ["mymodel"]
        described = requests.get(f"{management}/models/mymodel", headers=operator, timeout=10).json()
        version = described[0]["modelVersion"]
        # Asynchronously: TorchServe 0.12 answers a synchronous scale-down 500 in this image although
        # it does scale (the stopped worker's thread is interrupted while it waits for the process).
        scaled = requests.put(
            f"{management}/models/mymodel", headers=operator, timeout=30, params={"min_worker": 1, "max_worker": 1}
        )
        assert scaled.status_code == 202, scaled.text

        def workers() -> list[dict]:
            return requests.get(f"{management}/models/mymodel", headers=operator, timeout=10).json()[0]["workers"]

        deadline = time.monotonic() + 60
        while len(workers()) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [worker["status"] for worker in workers()] == ["READY"]
        default = requests.put(f"{management}/models/mymodel/{version}/set-default", headers=operator, timeout=30)
        assert default.status_code == 200, default.text
        # Registering from a URL stays refused by allowed_urls, token or not.
        registered = requests.post(
            f"{management}/models", params={"url": "http://127.0.0.1:9/x.mar"}, headers=operator, timeout=30
        )
        assert 400 <= registered.status_code < 500
        assert predict(served.url(), SAMPLE).status_code == 200
        assert served.healthy()


# --- load ------------------------------------------------------------------------------------


def test_the_load_tests_traffic_scenarios_meet_their_slos_against_the_container(serving, pipeline, tmp_path):
    served, _ = serving
    outcomes = run_load_tests(pipeline, out_dir=tmp_path / "loadtest", url=served.url(), short=True)
    assert outcomes
    for outcome in outcomes:
        assert outcome.stats["requests"] > 0, outcome.scenario
        assert outcome.broken == [], (outcome.scenario, outcome.broken)


# --- one client cannot take it down ------------------------------------------------------------


def test_held_uploads_on_the_published_ports_leave_the_container_answering(serving):
    """What differs from the native tests (tests/integration/test_bounds.py): the base's JDK honours
    the v2 plugin's limits and the base's HAProxy the proxy's. Published ports hide the client's
    address (every host client is one address to the proxy), so the other client here posts
    after each attack, and during the one on 8083, which has no per-client limit."""
    from tests.integration import test_bounds as bounds

    served, _ = serving
    for port, name in ((container.OIP, "oip"), (container.INFERENCE, "inference")):
        published = int(served.url(port).rsplit(":", 1)[1])
        answered = []
        sockets = bounds.attack(published, name, "upload")
        try:
            if name == "oip":
                answered += [predict(served.url(), SAMPLE, timeout=20).status_code for _ in range(5)]
        finally:
            for connection in sockets:
                connection.close()
        assert served.running(), served.logs()[-3000:]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if predict(served.url(), SAMPLE, timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise AssertionError(f"no answer within 10 s after the attack on {name}")
        assert set(answered) <= {200}, answered
    # (the JVM's command line names -XX:+ExitOnOutOfMemoryError; an error names the class)
    assert "java.lang.OutOfMemoryError" not in served.logs()
