"""PredictionService without a server: parsing, validation, batching, response shape."""

import json
import math
import re
import struct

import pytest

from handler.errors import RequestError
from handler.native import parse_json
from handler.service import EXPLAIN, PREDICT, V2_INFER, V2_METADATA, PredictionService, Request, route_of
from handler.typed_records import TypedRecords
from model.config import ROOT
from tests.v2_tensors import v2_datatype, v2_inputs

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())


@pytest.fixture(scope="module")
def schema(config_schema):
    return config_schema


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
    return PredictionService(schema, model)


def body(value):
    return json.dumps(value).encode()


def reply_json(reply):
    return reply.status, json.loads(reply.body)


def with_distance(distance, **changes):
    return {**SAMPLE, "distance": distance, **changes}


def one_error_shape(reply) -> dict:
    """The one error shape: code (the status), a stable type, one sentence, the problems listed."""
    error = json.loads(reply.body)
    assert set(error) - {"errors_omitted"} == {"code", "type", "error", "errors"}, error
    assert error["code"] == reply.status >= 400 and re.fullmatch(r"[a-z]+(_[a-z]+)*", error["type"]), error
    assert isinstance(error["error"], str) and error["error"] and "\n" not in error["error"]
    assert all(set(problem) == {"record", "field", "reason"} for problem in error["errors"]), error
    return error


def test_one_record_in_one_answer_out(service):
    status, answer = reply_json(service.handle([(body(SAMPLE), "application/json")])[0])
    assert status == 200
    assert answer == {
        "late_probability": pytest.approx(SAMPLE["distance"] / 10000),
        "late": False,
        "model_version": "1.0-test",
    }


def test_a_list_comes_back_in_order(service):
    records = [with_distance(d) for d in (100, 9000, 300)]
    status, answers = reply_json(service.handle([(body(records), "application/json")])[0])
    assert status == 200
    assert [a["late_probability"] for a in answers] == pytest.approx([0.01, 0.9, 0.03])
    assert [a["late"] for a in answers] == [False, True, False]


def test_kserve_v1_instances_come_back_as_predictions(service):
    """KServe's v1 protocol (the InferenceService in deploy/kserve) wraps the records."""
    records = [with_distance(d) for d in (100, 9000)]
    status, answer = reply_json(service.handle([(body({"instances": records}), "application/json")])[0])
    assert status == 200 and list(answer) == ["predictions"]
    assert [a["late_probability"] for a in answer["predictions"]] == pytest.approx([0.01, 0.9])
    status, refused = reply_json(
        service.handle([(body({"instances": [SAMPLE, {**SAMPLE, "distance": -1}]}), "application/json")])[0]
    )
    assert status == 400 and refused["errors"][0]["record"] == 1 and refused["errors"][0]["field"] == "distance"
    status, refused = reply_json(service.handle([(body({"instances": records, "extra": 1}), None)])[0])
    assert status == 400  # not the v1 envelope: a record with unknown fields


def test_batched_requests_share_one_forward_pass_and_keep_their_own_answers(service, model):
    requests = [(body(with_distance(100)), "application/json"), (body([with_distance(200), with_distance(300)]), None)]
    replies = service.handle(requests)
    assert len(model.calls) == 1
    assert reply_json(replies[0])[1]["late_probability"] == pytest.approx(0.01)
    assert [a["late_probability"] for a in reply_json(replies[1])[1]] == pytest.approx([0.02, 0.03])


def test_a_bad_request_does_not_disturb_its_batch_neighbours(service):
    requests = [
        (body(with_distance(100)), "application/json"),
        (b"{oops", "application/json"),
        (body(with_distance(-5)), "application/json"),
        (body(with_distance(700)), "application/json"),
    ]
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


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
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
    ],
)
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


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (None, "no body"),
        (b'{"carrier": NaN}', "NaN"),
        (b'{"distance": Infinity}', "Infinity"),
        (b'{"distance": 1e999}', "too large"),
        (b'{"carrier": "UA", "carrier": "AA"}', "more than once"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
        (b"42", "not an integer"),
        (b'"text"', "not a string"),
        (b"[]", "empty"),
        (b'{"carrier": "UA"', "not valid JSON"),
    ],
)
def test_malformed_bodies_get_a_400_naming_the_body(service, raw, reason):
    status, error = reply_json(service.handle([(raw, "application/json")])[0])
    assert status == 400
    assert error["errors"][0]["field"] == "body"
    assert reason in error["error"]


def test_too_many_records_get_a_413(service, schema):
    records = [SAMPLE] * (schema["x-model"]["max_records"] + 1)
    assert service.handle([(body(records), "application/json")])[0].status == 413


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "", None, "text/plain", "application/vnd.api+json"],
)
def test_json_is_accepted_with_or_without_a_json_content_type(service, content_type):
    assert service.handle([(body(SAMPLE), content_type)])[0].status == 200


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/csv", "image/png"]
)
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
    assert parse_json(b'{"distance": 1e300}') == {"distance": 1e300}
    with pytest.raises(RequestError):
        parse_json(b'{"distance": -1e400}')


def strict_reading(service, raw):
    """What the strict reader alone makes of a body: its rows and the shape of its answer."""
    records, as_list = service.native.records_of(parse_json(raw))
    return [service.typed.row(record) for record in records], as_list


def with_field(record, text):
    """A record's JSON with `text` (one more member) written before its closing brace."""
    return body(record)[:-1] + b", " + text + b"}"


@pytest.fixture
def strict_readings(monkeypatch):
    """The bodies PredictionService.parse hands to the strict reader."""
    from handler import native as module

    read, strict = [], module.parse_json
    monkeypatch.setattr(module, "parse_json", lambda raw: read.append(raw) or strict(raw))
    return read


@pytest.mark.parametrize(
    "raw",
    [
        with_field(SAMPLE, b'"distance": 2'),  # msgspec would keep the last
        with_field({**SAMPLE, "carrier": "A:B"}, b'"month": 4'),  # a colon in a string hides a duplicate
        b'[{"a": {"b": 1, "b": 2}}]',
        body({**SAMPLE, "carrier": "A:B"}),  # a colon inside a string
        b"\xef\xbb\xbf" + body(SAMPLE),  # a byte order mark
        b" " * 100 + body([SAMPLE]),  # more leading whitespace than the fast reading peeks at
        with_field(SAMPLE, b'"x": NaN'),
        with_field(SAMPLE, b'"x": 1e999'),
        body(SAMPLE).replace(b'"%s"' % SAMPLE["carrier"].encode(), b'"\\ud800"'),
        body(SAMPLE).replace(SAMPLE["carrier"].encode(), b"\xff"),
        b"",
    ],
)
def test_the_fast_reading_leaves_what_only_the_strict_reader_can_decide(service, strict_readings, raw):
    try:
        records, _ = service.native.parse(raw, "application/json")
    except RequestError as error:
        assert error.status == 400
    else:
        assert records == strict_reading(service, raw)[0]
    assert strict_readings == [raw]


@pytest.mark.parametrize(
    "raw",
    [
        body(SAMPLE),
        body([SAMPLE, SAMPLE]),
        body({"instances": [SAMPLE]}),
        body(SAMPLE).decode(),
        bytearray(body(SAMPLE)),
    ],
)
def test_the_fast_reading_reads_ordinary_bodies_as_the_strict_reader_does(service, strict_readings, raw):
    assert service.native.parse(raw, "application/json") == strict_reading(service, raw)
    assert strict_readings == []


def test_every_body_of_the_malformed_corpus_gets_the_same_answer_with_and_without_the_fast_reader(schema, monkeypatch):
    from loadtest.malformed import malformed_requests, tolerated_requests

    requests = [
        Request(r.body, r.headers.get("Content-Type"), PREDICT, None)
        for r in [*malformed_requests(), *tolerated_requests()]
        if not r.refused_by_frontend
    ]
    requests.append(Request(body([{**SAMPLE, "carrier": "A:B"}, SAMPLE]), "application/json", PREDICT, None))
    # duplicated keys that msgspec would merge: the kept value alone would be valid, or too many records
    records = body([SAMPLE]).decode()
    many = ",".join([json.dumps(SAMPLE)] * 1001)
    for raw in (
        f'{{"instances": [], "instances": {records}}}',
        f'{{"instances": {records}, "instances": {records}}}',
        f'{{"instances": {records}, "instances": [{many}]}}',
        body({**SAMPLE, "month": 3}).decode()[:-1] + ', "month": 4}',
        # as many colons as a whole record: one field the schema does not require left out
        body({k: v for k, v in SAMPLE.items() if k != "wind_gust"}).decode()[:-1] + ', "month": 4}',
    ):
        requests.append(Request(raw.encode(), "application/json", PREDICT, None))
    requests.append(Request(body([{**SAMPLE, "carrier": "A:B"}, SAMPLE]), "application/json", PREDICT, None))
    fast = PredictionService(schema, RecordingModel(schema["x-model"]["numeric"])).handle(requests)
    monkeypatch.setattr(TypedRecords, "read", lambda self, raw: None)
    strict = PredictionService(schema, RecordingModel(schema["x-model"]["numeric"])).handle(requests)
    assert [(r.status, r.body) for r in fast] == [(r.status, r.body) for r in strict]
    assert [r.status for r in fast[-6:-1]] == [400] * 5  # the duplicated keys
    assert fast[-1].status == 200


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

    service = PredictionService(schema, fragile)
    replies = service.handle([(body(SAMPLE), None), (body({**SAMPLE, "carrier": "BOOM"}), None), (body(SAMPLE), None)])
    assert [reply.status for reply in replies] == [200, 500, 200]
    assert "error" in json.loads(replies[1].body)


# -- routes, refusal kinds, timings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url_path", "explain", "route"),
    [
        ("", "False", PREDICT),
        ("", "True", EXPLAIN),
        (None, None, PREDICT),
        ("v2/models/mymodel/infer", "False", V2_INFER),
        ("v2/models/mymodel/versions/1.0-x/infer", "False", V2_INFER),
        ("v2/models/mymodel", "False", V2_METADATA),
        ("something/else", "False", PREDICT),
    ],
)
def test_the_route_comes_from_the_headers_the_frontend_sets(url_path, explain, route):
    assert route_of(url_path, explain) == route


def test_refusals_are_counted_by_kind_once_per_record(service):
    records = [SAMPLE, {**SAMPLE, "month": 0, "hour": 30}, {**SAMPLE, "carrier": 7, "tail": 1}, "not a record"]
    reply = service.handle([(body(records), "application/json")])[0]
    assert reply.status == 400
    assert sorted(reply.refused) == ["not_an_object", "out_of_range", "unknown_field", "wrong_type"]
    assert service.handle([(b"{oops", "application/json")])[0].refused == ("body",)
    assert service.handle([(body(SAMPLE), "text/csv")])[0].refused == ("media_type",)
    assert service.handle([(body({k: v for k, v in SAMPLE.items() if k != "dest"}), None)])[0].refused == (
        "missing_field",
    )


def test_scored_probabilities_come_with_the_replies_and_refusals_score_nothing(service):
    batch = service.handle_batch([(body([with_distance(100), with_distance(200)]), None), (b"{", None)])
    assert batch.replies[0].scored == pytest.approx((0.01, 0.02))
    assert batch.replies[1].scored == ()
    assert batch.preprocess_seconds > 0 and batch.inference_seconds > 0


def test_a_batch_of_refusals_runs_no_model(service, model):
    batch = service.handle_batch([(b"{", None), (body({**SAMPLE, "month": 0}), None)])
    assert [reply.status for reply in batch.replies] == [400, 400]
    assert model.calls == [] and batch.inference_seconds == 0


# -- explanations ---------------------------------------------------------------------------------


def fake_explain(categorical, numeric):
    """Attributions that add up to the logit change from a reference at logit 0."""
    rows = []
    for row in numeric:
        logit = row[0] / 10
        rows.append(
            {
                "probability": 1 / (1 + math.exp(-logit)),
                "logit": logit,
                "baseline_probability": 0.5,
                "baseline_logit": 0.0,
                "attributions": {"month": logit / 2, "carrier": logit / 2},
            }
        )
    return rows


def test_an_explanation_carries_the_answer_the_reference_and_the_attributions(schema, model):
    service = PredictionService(schema, model, fake_explain)
    status, answer = reply_json(service.handle([Request(body(SAMPLE), "application/json", EXPLAIN)])[0])
    assert status == 200
    assert set(answer) == {
        "late_probability",
        "late",
        "model_version",
        "baseline_probability",
        "logit",
        "baseline_logit",
        "attributions",
    }
    assert sum(answer["attributions"].values()) == pytest.approx(answer["logit"] - answer["baseline_logit"])
    status, answers = reply_json(service.handle([Request(body([SAMPLE, SAMPLE]), None, EXPLAIN)])[0])
    assert status == 200 and len(answers) == 2


def test_explanations_and_predictions_in_one_batch_keep_their_own_shapes(schema, model):
    service = PredictionService(schema, model, fake_explain)
    replies = service.handle(
        [
            Request(body(SAMPLE), None, EXPLAIN),
            Request(body(SAMPLE), None, PREDICT),
            Request(body({**SAMPLE, "month": 13}), None, EXPLAIN),
        ]
    )
    assert [reply.status for reply in replies] == [200, 200, 400]
    assert "attributions" in json.loads(replies[0].body) and "attributions" not in json.loads(replies[1].body)
    assert replies[1].scored and not replies[0].scored  # explanations are not counted as predictions


def test_without_an_explainer_explanations_answer_501(service):
    reply = service.handle([Request(body(SAMPLE), None, EXPLAIN)])[0]
    assert reply.status == 501 and "explanations" in json.loads(reply.body)["error"]


# -- the Open Inference Protocol v2 -----------------------------------------------------------------


def v2_request(schema, records, **extra):
    return Request(body({"inputs": v2_inputs(schema, records), **extra}), "application/json", V2_INFER)


def v2_error(service, payload):
    reply = service.handle([Request(body(payload), "application/json", V2_INFER)])[0]
    error = one_error_shape(reply)
    return reply.status, error["error"]


def test_v2_metadata_has_one_input_per_request_field_from_the_schema(service, schema):
    status, metadata = reply_json(service.handle([Request(None, None, V2_METADATA)])[0])
    assert status == 200
    assert metadata["name"] == "mymodel" and metadata["versions"] == ["1.0-test"]
    assert [i["name"] for i in metadata["inputs"]] == schema["x-model"]["categorical"] + schema["x-model"]["numeric"]
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
        name: v2_datatype(schema, name) for name in schema["properties"]
    }
    assert all(i["shape"] == [-1] for i in metadata["inputs"] + metadata["outputs"])
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"late_probability": "FP64", "late": "BOOL"}


def test_v2_inference_answers_each_element_like_the_json_api(service, schema):
    records = [with_distance(d) for d in (100, 9000, 300)]
    status, answer = reply_json(service.handle([v2_request(schema, records, id="42")])[0])
    assert status == 200
    assert answer["model_name"] == "mymodel" and answer["model_version"] == "1.0-test" and answer["id"] == "42"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["late_probability"]["data"] == pytest.approx([0.01, 0.9, 0.03])
    assert outputs["late_probability"]["shape"] == [3] and outputs["late_probability"]["datatype"] == "FP64"
    assert outputs["late"]["data"] == [False, True, False] and outputs["late"]["datatype"] == "BOOL"
    native = json.loads(service.handle([(body(records), None)])[0].body)
    assert [a["late_probability"] for a in native] == outputs["late_probability"]["data"]


def test_v2_optional_inputs_may_be_left_out_or_null_and_only_requested_outputs_come_back(service, schema, model):
    required = {k: SAMPLE[k] for k in schema["required"]}
    inputs = v2_inputs(schema, [required]) + [{"name": "temp", "datatype": "FP64", "shape": [1], "data": [None]}]
    request = Request(body({"inputs": inputs, "outputs": [{"name": "late"}]}), None, V2_INFER)
    status, answer = reply_json(service.handle([request])[0])
    assert status == 200 and [o["name"] for o in answer["outputs"]] == ["late"] and "id" not in answer
    assert all(value != value for value in model.calls[-1][1][0][len(schema["required"]) - 3 :])  # NaN: missing


def test_v2_binary_data_is_decoded_like_json_data(service, schema):
    """Triton's binary-data extension (tritonclient's default): the JSON header, then raw tensors."""
    records = [with_distance(100), with_distance(700, temp=None)]
    inputs, chunks = [], []
    for tensor in v2_inputs(schema, records):
        if tensor["datatype"] == "BYTES":
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in tensor["data"])
        else:
            code = "q" if tensor["datatype"] == "INT64" else "d"
            raw = struct.pack(f"<{len(records)}{code}", *[math.nan if v is None else v for v in tensor["data"]])
        inputs.append({k: v for k, v in tensor.items() if k != "data"} | {"parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    header = body({"inputs": inputs})
    reply = service.handle([Request(header + b"".join(chunks), "application/octet-stream", V2_INFER, len(header))])[0]
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["outputs"][0]["data"] == pytest.approx([0.01, 0.07])


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        (lambda inputs: [{**i, "datatype": "FP64"} if i["name"] == "carrier" else i for i in inputs], 400, "'carrier'"),
        (lambda inputs: [{**i, "datatype": "BYTES"} if i["name"] == "month" else i for i in inputs], 400, "'month'"),
        (
            lambda inputs: [{**i, "datatype": "BOOL"} if i["name"] == "distance" else i for i in inputs],
            400,
            "'distance'",
        ),
        (
            lambda inputs: [{**i, "datatype": "FP64", "data": [1.5]} if i["name"] == "month" else i for i in inputs],
            400,
            "'month', element 0",
        ),
        (lambda inputs: [i for i in inputs if i["name"] != "origin"], 400, "'origin'"),
        (
            lambda inputs: [
                {**i, "shape": [2], "data": i["data"] * 2} if i["name"] == "distance" else i for i in inputs
            ],
            400,
            "distance [2]",
        ),
        (lambda inputs: [{**i, "shape": [3]} if i["name"] == "hour" else i for i in inputs], 400, "'hour'"),
        (lambda inputs: [{**i, "shape": [1, 1]} if i["name"] == "hour" else i for i in inputs], 400, "'hour'"),
        (lambda inputs: [{**i, "data": [3.5]} if i["name"] == "hour" else i for i in inputs], 400, "'hour', element 0"),
        (
            lambda inputs: [{**i, "data": [13]} if i["name"] == "month" else i for i in inputs],
            400,
            "'month', element 0",
        ),
        (lambda inputs: [*inputs, {"name": "tail", "datatype": "BYTES", "shape": [1], "data": ["N1"]}], 400, "'tail'"),
        (lambda inputs: [*inputs, inputs[0]], 400, "'carrier'"),
        (lambda inputs: [], 400, "inputs"),
    ],
)
def test_bad_v2_requests_get_a_4xx_naming_the_input(service, schema, change, status, named):
    code, error = v2_error(service, {"inputs": change(v2_inputs(schema, [SAMPLE]))})
    assert code == status and named in error, error


def test_v2_body_level_mistakes_are_refused(service, schema):
    inputs = v2_inputs(schema, [SAMPLE])
    assert v2_error(service, [1])[0] == 400
    assert "'tail'" in v2_error(service, {"inputs": inputs, "tail": 1})[1]
    assert "'nope'" in v2_error(service, {"inputs": inputs, "outputs": [{"name": "nope"}]})[1]
    assert v2_error(service, {"inputs": inputs, "id": 7})[0] == 400
    too_many = v2_inputs(schema, [SAMPLE] * (schema["x-model"]["max_records"] + 1))
    assert v2_error(service, {"inputs": too_many})[0] == 413
    reply = service.handle([Request(b"{", "application/json", V2_INFER)])[0]
    assert reply.status == 400 and one_error_shape(reply)["type"] == "invalid_request"
    bad_length = Request(body({"inputs": inputs}), None, V2_INFER, 10_000)
    assert service.handle([bad_length])[0].status == 400


# -- one request's fault stays its own ------------------------------------------------------------


@pytest.mark.parametrize("length", ["²", "9" * 5000, "-5", "+5", " 5", "0x10", "5.0", "1e3", "0", "99999"])
def test_a_crafted_binary_header_fails_its_own_request_with_a_400_naming_the_header(service, schema, length):
    good = v2_request(schema, [SAMPLE])
    crafted = Request(good.body, "application/octet-stream", V2_INFER, length)
    replies = service.handle([good, crafted, (body(SAMPLE), None)])
    assert [reply.status for reply in replies] == [200, 400, 200]
    error = json.loads(replies[1].body)["error"]
    assert error.startswith("header 'Inference-Header-Content-Length': ") and len(error) < 300, error


def test_an_absent_or_empty_binary_header_means_json_only(service, schema):
    for length in (None, ""):
        assert service.handle([v2_request(schema, [SAMPLE])._replace(json_length=length)])[0].status == 200


def test_a_fault_reading_one_request_fails_that_request_alone(service, monkeypatch):
    parse = service.native.parse

    def fragile(raw, content_type):
        if raw == b"boom":
            raise KeyError("a bug")
        return parse(raw, content_type)

    monkeypatch.setattr(service.native, "parse", fragile)
    replies = service.handle([(body(SAMPLE), None), (b"boom", None), (body([SAMPLE, SAMPLE]), None)])
    assert [reply.status for reply in replies] == [200, 500, 200]
    assert json.loads(replies[1].body)["code"] == 500


def test_explanations_have_their_own_record_cap(schema, model):
    service = PredictionService(schema, model, fake_explain, max_explained_records=3)
    replies = service.handle(
        [
            Request(body([SAMPLE] * 3), None, EXPLAIN),
            Request(body([SAMPLE] * 4), None, EXPLAIN),
            Request(body([SAMPLE] * 4), None, PREDICT),
        ]
    )
    assert [reply.status for reply in replies] == [200, 413, 200]
    assert replies[1].refused == ("too_many_records",)
    assert "at most 3" in json.loads(replies[1].body)["error"]


class BatchContext:
    """TorchServe's context for a batch, as the handler uses it: headers per request (None: a
    request whose headers cannot be read), and the statuses the handler sets."""

    def __init__(self, headers):
        self.headers = headers
        self.statuses = {}

    def get_all_request_header(self, index):
        if self.headers[index] is None:
            raise KeyError(index)
        return self.headers[index]

    def get_request_id(self, index):
        return f"id-{index}"

    def set_response_status(self, status, phrase, index):
        self.statuses[index] = status

    def set_response_content_type(self, index, content_type):
        assert content_type == "application/json"


@pytest.fixture
def served(service):
    from handler.handler import PredictionHandler

    handler = PredictionHandler()
    handler.service = service
    return handler


def test_the_handler_answers_a_request_it_cannot_read_alone(served):
    context = BatchContext([{"content-type": "application/json"}, None, {}])
    replies = served.handle([{"body": body(SAMPLE)}, {"body": body(SAMPLE)}, {"body": body([SAMPLE])}], context)
    assert context.statuses == {0: 200, 1: 500, 2: 200}
    assert json.loads(replies[1])["code"] == 500 and len(json.loads(replies[2])) == 1


def test_the_handler_passes_the_binary_header_as_sent(served, schema):
    good = v2_request(schema, [SAMPLE])
    headers = {"url_path": "v2/models/mymodel/infer", "Inference-Header-Content-Length": "²"}
    context = BatchContext([headers, {"url_path": "v2/models/mymodel/infer"}])
    replies = served.handle([{"body": good.body}, {"body": good.body}], context)
    assert context.statuses == {0: 400, 1: 200}
    assert "Inference-Header-Content-Length" in json.loads(replies[0])["error"]


def test_a_fault_of_the_service_itself_gets_each_request_a_500_not_an_exception(served, monkeypatch):
    monkeypatch.setattr(served.service, "handle_batch", lambda requests: 1 / 0)
    context = BatchContext([{}, {}])
    replies = served.handle([{"body": body(SAMPLE)}, {"body": body(SAMPLE)}], context)
    assert context.statuses == {0: 500, 1: 500}
    assert all(json.loads(reply)["code"] == 500 for reply in replies)


def test_a_request_left_without_a_reply_fails_the_batch_loudly(served, monkeypatch):
    """Replies go back by position: a missing one would hand the replies after it to the wrong
    clients, so the service raises instead of answering fewer, and the handler answers 500 to each."""
    service = served.service
    answer = service.answer_requests
    monkeypatch.setattr(service, "answer_requests", lambda accepted: answer(accepted[:1]))
    requests = [(body(SAMPLE), None), (body(SAMPLE), None), (b"{", None)]
    with pytest.raises(RuntimeError, match=r"no reply for the requests at \[1\] of a batch of 3"):
        service.handle(requests)
    context = BatchContext([{}, {}, {}])
    replies = served.handle([{"body": raw} for raw, _ in requests], context)
    assert context.statuses == {0: 500, 1: 500, 2: 500} and len(replies) == 3


# -- the one error shape -----------------------------------------------------------------------


def test_every_error_the_service_answers_has_the_one_shape_and_a_stable_type(schema, model):
    def explode(categorical, numeric):
        raise RuntimeError("broken")

    service = PredictionService(schema, model)
    broken = PredictionService(schema, explode)
    many = [SAMPLE] * (schema["x-model"]["max_records"] + 1)
    v2_good = v2_request(schema, [SAMPLE])
    cases = [
        (service, (b"{", None), 400, "invalid_request"),
        (service, (body({**SAMPLE, "month": 13}), None), 400, "invalid_request"),
        (service, (body(many), None), 413, "too_many_records"),
        (service, (body(SAMPLE), "text/csv"), 415, "unsupported_media_type"),
        (service, Request(body(SAMPLE), None, EXPLAIN), 501, "not_implemented"),
        (service, Request(body(SAMPLE), None, "nowhere"), 404, "not_found"),
        (broken, (body(SAMPLE), None), 500, "internal_error"),
        (service, Request(b"{", None, V2_INFER), 400, "invalid_request"),
        (service, Request(body({"inputs": v2_inputs(schema, many)}), None, V2_INFER), 413, "too_many_records"),
        (service, Request(v2_good.body, "text/csv", V2_INFER), 415, "unsupported_media_type"),
        (service, v2_good._replace(json_length="\u00b2"), 400, "bad_header"),
        (broken, v2_good, 500, "internal_error"),
    ]
    for server, request, status, kind in cases:
        reply = server.handle([request])[0]
        assert reply.status == status, (request, reply.body)
        assert one_error_shape(reply)["type"] == kind, reply.body


def test_the_error_sentence_is_the_first_problem_and_how_many_more(service):
    record = {**SAMPLE, "month": 13, "hour": 30, "distance": -1}
    error = one_error_shape(service.handle([(body(record), None)])[0])
    first = error["errors"][0]
    assert error["error"] == f"field '{first['field']}': {first['reason']} (and 2 more problems)"
    error = one_error_shape(service.handle([(body([SAMPLE, {**SAMPLE, "month": 13}]), None)])[0])
    assert error["error"] == f"record 1, field 'month': {error['errors'][0]['reason']}" and len(error["errors"]) == 1
