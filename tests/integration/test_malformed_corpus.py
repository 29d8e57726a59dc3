"""The malformed-request corpus (loadtest/malformed.py) against a real TorchServe: every entry
gets its 4xx with a JSON error, no worker dies, and good requests batched with bad ones keep
the answer they get alone."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from loadtest.malformed import HostileRequest, malformed_requests, sample_record, tolerated_requests, valid_records

CORPUS = malformed_requests()
TOLERATED = tolerated_requests()
JSON = {"Content-Type": "application/json"}


def send(server, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/mymodel", data=body, headers=headers, timeout=30)


def workers(server) -> dict[int, str]:
    described = requests.get(f"{server.management_url}/models/mymodel", timeout=10).json()[0]
    return {worker["pid"]: worker["status"] for worker in described["workers"]}


def probability(reply: requests.Response) -> float:
    assert reply.status_code == 200, reply.text[:300]
    return reply.json()["late_probability"]


@pytest.fixture(scope="module")
def corpus_run(server):
    """The whole corpus, one request after another, with the workers seen before and after."""
    before = workers(server)
    replies = {request.name: send(server, request.body, request.headers) for request in CORPUS}
    return before, replies, workers(server)


def test_the_corpus_covers_every_refusal():
    assert len(CORPUS) >= 45
    assert {request.status for request in CORPUS} == {400, 413, 415}


@pytest.mark.parametrize("request_", CORPUS, ids=[request.name for request in CORPUS])
def test_each_malformed_request_gets_its_4xx_with_a_json_error(corpus_run, request_: HostileRequest):
    reply = corpus_run[1][request_.name]
    assert reply.status_code < 500, reply.text[:300]
    assert reply.status_code == request_.status, reply.text[:300]
    if request_.refused_by_frontend:
        return
    error = reply.json()
    assert error["code"] == request_.status and error["type"] == request_.error_type
    assert isinstance(error["error"], str) and error["error"]
    assert error["errors"], error


def test_no_worker_dies_or_leaves_ready_during_the_corpus(corpus_run):
    before, _, after = corpus_run
    assert before and set(before.values()) == {"READY"}
    assert after == before


@pytest.mark.parametrize("request_", TOLERATED, ids=[request.name for request in TOLERATED])
def test_tolerated_oddities_are_answered_like_the_sample(server, request_: HostileRequest):
    expected = probability(send(server, json.dumps(sample_record()).encode(), JSON))
    assert probability(send(server, request_.body, request_.headers)) == pytest.approx(expected, abs=1e-6)


def test_good_requests_batched_with_bad_ones_keep_their_solo_answers(server):
    """Rounds of bad and good requests released together by a barrier, so TorchServe (batch
    delay of a few ms) merges them into the same batches."""
    good = [json.dumps(record).encode() for record in valid_records(8)]
    solo = [probability(send(server, body, JSON)) for body in good]
    bad = [request for request in CORPUS if not request.refused_by_frontend]
    rounds = [bad[start : start + len(good)] for start in range(0, len(bad), len(good))]

    def fire(barrier: threading.Barrier, body: bytes, headers: dict[str, str]) -> requests.Response:
        barrier.wait(timeout=30)
        return send(server, body, headers)

    with ThreadPoolExecutor(2 * len(good)) as pool:
        for chunk in rounds:
            barrier = threading.Barrier(len(chunk) + len(good))
            bad_replies = [pool.submit(fire, barrier, request.body, request.headers) for request in chunk]
            good_replies = [pool.submit(fire, barrier, body, JSON) for body in good]
            for i, future in enumerate(good_replies):  # first: a disturbed neighbour is the failure to see
                assert probability(future.result()) == pytest.approx(solo[i], abs=1e-6), [r.name for r in chunk]
            for request, future in zip(chunk, bad_replies):
                assert future.result().status_code == request.status, (request.name, future.result().text[:300])
