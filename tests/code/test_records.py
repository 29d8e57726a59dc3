"""LateArrivalService without a server: parsing, validation, batching, response shape."""

import json

import pytest

from handler.records import LateArrivalService, RequestError, parse_json
from model.config import ROOT
from model.export import input_schema

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())


@pytest.fixture(scope="module")
def schema():
    from model.config import load_settings

    settings = load_settings()
    config = {
        "name": "mymodel", "version": "1.0-test", "target": "late",
        "categorical": list(settings.features.categorical), "numeric": list(settings.features.numeric),
        "vocabularies": [{"": 1, SAMPLE.get(name) or "X": 2} for name in settings.features.categorical],
        "features": settings.features.model_dump(), "serving": {**settings.serving.model_dump(), "threshold": 0.5},
    }
    return input_schema(config)


class RecordingModel:
    """Stands in for model.pt: probability = distance / 10000, and remembers its calls."""

    def __init__(self, numeric_names):
        self.distance = numeric_names.index("distance")
        self.calls = []

    def __call__(self, categorical, numeric):
        self.calls.append((categorical, numeric))
        return [row[self.distance] / 10000 for row in numeric]


@pytest.fixture
def model(schema):
    return RecordingModel(schema["x-model"]["numeric"])


@pytest.fixture
def service(schema, model):
    return LateArrivalService(schema, model)


def body(value):
    return json.dumps(value).encode()


def reply_json(reply):
    return reply.status, json.loads(reply.body)


def with_distance(distance, **changes):
    return {**SAMPLE, "distance": distance, **changes}


def test_one_record_in_one_answer_out(service):
    status, answer = reply_json(service.handle([(body(SAMPLE), "application/json")])[0])
    assert status == 200
    assert answer == {"late_probability": pytest.approx(SAMPLE["distance"] / 10000), "late": False,
                      "model_version": "1.0-test"}


def test_a_list_comes_back_in_order(service):
    records = [with_distance(d) for d in (100, 9000, 300)]
    status, answers = reply_json(service.handle([(body(records), "application/json")])[0])
    assert status == 200
    assert [a["late_probability"] for a in answers] == pytest.approx([0.01, 0.9, 0.03])
    assert [a["late"] for a in answers] == [False, True, False]


def test_batched_requests_share_one_forward_pass_and_keep_their_own_answers(service, model):
    requests = [(body(with_distance(100)), "application/json"), (body([with_distance(200), with_distance(300)]), None)]
    replies = service.handle(requests)
    assert len(model.calls) == 1
    assert reply_json(replies[0])[1]["late_probability"] == pytest.approx(0.01)
    assert [a["late_probability"] for a in reply_json(replies[1])[1]] == pytest.approx([0.02, 0.03])


def test_a_bad_request_does_not_disturb_its_batch_neighbours(service):
    requests = [(body(with_distance(100)), "application/json"), (b"{oops", "application/json"),
                (body(with_distance(-5)), "application/json"), (body(with_distance(700)), "application/json")]
    statuses = [reply.status for reply in service.handle(requests)]
    assert statuses == [200, 400, 400, 200]
    assert reply_json(service.handle(requests)[3])[1]["late_probability"] == pytest.approx(0.07)


def test_missing_optional_fields_and_nulls_are_allowed(service, model):
    record = {k: SAMPLE[k] for k in ("carrier", "origin", "dest", "month", "day_of_week", "hour", "minute", "distance")}
    record["wind_gust"] = None
    status, _ = reply_json(service.handle([(body(record), "application/json")])[0])
    assert status == 200
    categorical, numeric = model.calls[-1]
    assert categorical[3] == [""]  # manufacturer missing
    assert all(value != value for value in numeric[0][5:])  # NaN for every missing number


@pytest.mark.parametrize(("record", "field", "reason"), [
    ({k: v for k, v in SAMPLE.items() if k != "carrier"}, "carrier", "required"),
    ({**SAMPLE, "carrier": None}, "carrier", "must be a string, got null"),
    ({**SAMPLE, "carrier": 7}, "carrier", "must be a string, got an integer"),
    ({**SAMPLE, "carrier": ""}, "carrier", "must not be empty"),
    ({**SAMPLE, "dest": "X" * 500}, "dest", "longer than 64"),
    ({**SAMPLE, "distance": "719"}, "distance", "must be a number, got a string"),
    ({**SAMPLE, "distance": True}, "distance", "got a boolean"),
    ({**SAMPLE, "distance": -1}, "distance", "below the minimum"),
    ({**SAMPLE, "month": 13}, "month", "above the maximum"),
    ({**SAMPLE, "month": 3.5}, "month", "must be an integer"),
    ({**SAMPLE, "precip": [1]}, "precip", "got a list"),
    ({**SAMPLE, "temp": {"F": 3}}, "temp", "got an object"),
    ({**SAMPLE, "dep_delay": 12}, "dep_delay", "not a known field"),
])
def test_invalid_fields_are_named_with_the_reason(service, record, field, reason):
    status, error = reply_json(service.handle([(body(record), "application/json")])[0])
    assert status == 400
    assert any(e["field"] == field and reason in e["reason"] for e in error["errors"]), error
    assert field in error["error"]


def test_every_problem_of_every_record_is_reported(service):
    records = [SAMPLE, {**SAMPLE, "month": 0, "hour": 30}, "not a record"]
    status, error = reply_json(service.handle([(body(records), "application/json")])[0])
    assert status == 400
    assert {(e["record"], e["field"]) for e in error["errors"]} == {(1, "month"), (1, "hour"), (2, "record")}


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (None, "no body"),
    (b"{\"carrier\": NaN}", "NaN"),
    (b"{\"distance\": Infinity}", "Infinity"),
    (b"{\"distance\": 1e999}", "too large"),
    (b"{\"carrier\": \"UA\", \"carrier\": \"AA\"}", "more than once"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b"42", "not an integer"),
    (b"\"text\"", "not a string"),
    (b"[]", "empty"),
    (b"{\"carrier\": \"UA\"", "not valid JSON"),
])
def test_malformed_bodies_get_a_400_naming_the_body(service, raw, reason):
    status, error = reply_json(service.handle([(raw, "application/json")])[0])
    assert status == 400
    assert error["errors"][0]["field"] == "body"
    assert reason in error["error"]


def test_too_many_records_get_a_413(service, schema):
    records = [SAMPLE] * (schema["x-model"]["max_records"] + 1)
    assert service.handle([(body(records), "application/json")])[0].status == 413


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "", None,
                                          "text/plain", "application/vnd.api+json"])
def test_json_is_accepted_with_or_without_a_json_content_type(service, content_type):
    assert service.handle([(body(SAMPLE), content_type)])[0].status == 200


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "text/csv", "image/png"])
def test_other_content_types_get_a_415_that_says_what_to_send(service, content_type):
    status, error = reply_json(service.handle([(body(SAMPLE), content_type)])[0])
    assert status == 415
    assert "application/json" in error["error"]


def test_already_decoded_bodies_are_validated_too(service):
    assert service.handle([({**SAMPLE}, "application/json")])[0].status == 200
    assert service.handle([({**SAMPLE, "month": 99}, "application/json")])[0].status == 400


def test_example_record_is_valid(service):
    assert service.problems(service.example()) == []


def test_parse_json_keeps_big_but_finite_numbers():
    assert parse_json(b"{\"distance\": 1e300}") == {"distance": 1e300}
    with pytest.raises(RequestError):
        parse_json(b"{\"distance\": -1e400}")


def test_an_unpaired_surrogate_is_refused_by_name(service):
    status, error = reply_json(service.handle([(b'{"carrier": "\\ud800"}', "application/json")])[0])
    assert status == 400
    assert any(e["field"] == "carrier" and "surrogate" in e["reason"] for e in error["errors"])


def test_an_error_reply_stays_small_however_many_problems(service, schema):
    records = [{**SAMPLE, **{f"unknown_{i}": 1 for i in range(30)}}] * schema["x-model"]["max_records"]
    reply = service.handle([(body(records), "application/json")])[0]
    error = json.loads(reply.body)
    assert reply.status == 400 and len(reply.body) < 64_000
    assert len(error["errors"]) == 50 and error["errors_omitted"] == 30 * len(records) - 50


def test_a_request_the_model_cannot_score_fails_alone(schema):
    def fragile(categorical, numeric):
        if any(value == "BOOM" for value in categorical[0]):
            raise RuntimeError("cannot score")
        return [0.3] * len(numeric)

    service = LateArrivalService(schema, fragile)
    replies = service.handle([(body(SAMPLE), None), (body({**SAMPLE, "carrier": "BOOM"}), None), (body(SAMPLE), None)])
    assert [reply.status for reply in replies] == [200, 500, 200]
    assert "error" in json.loads(replies[1].body)
