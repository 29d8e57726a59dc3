"""POST /explanations/mymodel on a real TorchServe: integrated gradients per record and field, in
logit units, that add up to the record's logit minus the reference flight's (completeness), with
the same answer and the same refusals as /predictions."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml

from loadtest.malformed import malformed_requests
from model.config import ROOT
from model.data.request_records import request_records
from model.data.split import split_rows

JSON = {"Content-Type": "application/json"}
SAMPLE = json.loads((ROOT / "sample_input.json").read_text())
MODEL_CONFIG = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())


def post(server, route: str, body, headers=JSON) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return requests.post(f"{server.inference_url}/{route}/mymodel", data=data, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def flights(table, settings) -> list[dict]:
    rows = split_rows(table, "test").sample(40, random_state=3)
    return request_records(rows, settings.features)


@pytest.fixture(scope="module")
def explained(server, flights) -> list[dict]:
    reply = post(server, "explanations", flights)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_every_record_gets_one_attribution_per_request_field(explained, flights, schema):
    fields = schema["x-model"]["categorical"] + schema["x-model"]["numeric"]
    assert len(explained) == len(flights)
    for answer in explained:
        assert list(answer["attributions"]) == fields
        assert all(math.isfinite(value) for value in answer["attributions"].values())


def test_attributions_add_up_to_the_logit_change_from_the_reference_flight(explained):
    """Completeness of integrated gradients, up to the quadrature error of the handler's
    explain_steps (model-config.yaml): within 0.05 logit or 5% of the change, whichever is larger."""
    for answer in explained:
        change = answer["logit"] - answer["baseline_logit"]
        total = sum(answer["attributions"].values())
        assert abs(total - change) <= max(0.05, 0.05 * abs(change)), (total, change)
    changes = [abs(a["logit"] - a["baseline_logit"]) for a in explained]
    assert max(changes) > 0.05  # the check is not vacuous: these flights differ from the reference


def test_probabilities_are_the_logits_and_equal_the_predictions(server, explained, flights, metrics):
    predicted = post(server, "predictions", flights).json()
    for answer, prediction in zip(explained, predicted):
        assert answer["late_probability"] == pytest.approx(prediction["late_probability"], abs=1e-6)
        assert answer["late"] == prediction["late"]
        assert answer["model_version"] == metrics["model_version"]
        assert answer["late_probability"] == pytest.approx(1 / (1 + math.exp(-answer["logit"])), abs=1e-6)
        assert answer["baseline_probability"] == pytest.approx(1 / (1 + math.exp(-answer["baseline_logit"])))
    assert len({a["baseline_logit"] for a in explained}) == 1  # one reference flight for everybody


def test_one_record_in_one_explanation_out(server, explained, flights):
    reply = post(server, "explanations", flights[0])
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["attributions"] == pytest.approx(explained[0]["attributions"], abs=1e-5)


def test_a_category_the_model_never_saw_gets_no_attribution(server, schema):
    """The reference flight has every category unknown: a record whose categories are all unknown
    matches it there, so integrated gradients give those fields nothing and the numbers everything."""
    unseen = {name: "never-seen-" + name for name in schema["x-model"]["categorical"]}
    answer = post(server, "explanations", {**SAMPLE, **unseen}).json()
    assert all(answer["attributions"][name] == pytest.approx(0, abs=1e-6) for name in unseen)
    numbers = sum(answer["attributions"][name] for name in schema["x-model"]["numeric"])
    change = answer["logit"] - answer["baseline_logit"]
    assert numbers == pytest.approx(change, abs=max(0.05, 0.05 * abs(change)))


@pytest.mark.parametrize(
    "request_", [r for r in malformed_requests() if not r.refused_by_frontend][::3], ids=lambda request_: request_.name
)
def test_bad_input_gets_the_same_4xx_as_predictions(server, request_):
    explanation = post(server, "explanations", request_.body, request_.headers)
    prediction = post(server, "predictions", request_.body, request_.headers)
    assert explanation.status_code == prediction.status_code == request_.status
    assert explanation.json() == prediction.json()


def test_explanations_batched_with_predictions_keep_their_own_answers(server, flights):
    solo = post(server, "predictions", flights[:12]).json()

    def send(i):
        route = "explanations" if i % 2 else "predictions"
        return i, route, post(server, route, flights[i])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, range(12)))
    for i, route, reply in results:
        assert reply.status_code == 200, reply.text
        assert reply.json()["late_probability"] == pytest.approx(solo[i]["late_probability"], abs=1e-6)
        assert ("attributions" in reply.json()) == (route == "explanations")


def workers(server) -> dict[int, str]:
    described = requests.get(f"{server.management_url}/models/mymodel", timeout=10).json()[0]
    return {worker["pid"]: worker["status"] for worker in described["workers"]}


def test_a_full_batch_of_the_largest_explanation_bodies_is_answered_without_a_worker_restart(server, flights):
    """batchSize concurrent bodies of max_explained_records records each (what one worker may
    be handed at once): all answered within responseTimeout, by the same worker processes; one
    record more is refused as too many."""
    cap, batch = MODEL_CONFIG["handler"]["max_explained_records"], MODEL_CONFIG["batchSize"]
    largest = [flights[i % len(flights)] for i in range(cap)]
    before = workers(server)
    started = time.monotonic()
    with ThreadPoolExecutor(batch) as pool:
        replies = list(pool.map(lambda _: post(server, "explanations", largest), range(batch)))
    elapsed = time.monotonic() - started
    assert [reply.status_code for reply in replies] == [200] * batch, replies[0].text[:300]
    assert all(len(reply.json()) == cap for reply in replies)
    assert elapsed < MODEL_CONFIG["responseTimeout"]
    assert workers(server) == before and set(before.values()) == {"READY"}
    refused = post(server, "explanations", largest + largest[:1])
    assert refused.status_code == 413 and f"at most {cap}" in refused.json()["error"], refused.text
    assert post(server, "predictions", largest + largest[:1]).status_code == 200  # the cap is the explanations'
