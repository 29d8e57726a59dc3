"""Load-test payloads (loadtest/payloads.py): real records are valid requests, every anomaly
gets the status it is tagged with, FGSM records stay valid and raise the late probability,
and the same seed writes the same files."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch

from handler.service import PredictionService
from loadtest.payloads import (
    ADVERSARIAL_FILE,
    ANOMALOUS_FILE,
    RECORDS_FILE,
    FieldBounds,
    adversarial_cases,
    anomalous_cases,
    late_probabilities,
    probability_shift,
    real_records,
    training_spread,
    write_payloads,
)
from model.artifact.predict import load_served_model
from model.data.split import split_rows

COUNT = 300


@pytest.fixture(scope="module")
def served(settings, metrics):
    return load_served_model(settings.paths.export_dir)


@pytest.fixture(scope="module")
def service(served):
    """The handler's own logic with the exported model: what TorchServe would answer."""
    model, schema = served

    def predict(categorical, numeric):
        with torch.no_grad():
            return model(categorical, torch.tensor(numeric, dtype=torch.float32).reshape(len(numeric), -1)).tolist()

    return PredictionService(schema, predict)


@pytest.fixture(scope="module")
def spread(settings, metrics):
    return training_spread(settings.paths.model_dir)


@pytest.fixture(scope="module")
def records(settings, table):
    return real_records(table, settings.features, COUNT, seed=settings.seed)


@pytest.fixture(scope="module")
def adversarial(served, records, spread):
    model, schema = served
    return adversarial_cases(model, schema, records, spread)


def status(service, record) -> int:
    return service.handle([(json.dumps(record), "application/json")])[0].status


def test_real_records_are_valid_requests_from_the_test_months(settings, table, records, service):
    test_months = set(split_rows(table, "test").loc[:, "month"].astype(int))
    assert len(records) == COUNT
    assert {record["month"] for record in records} <= test_months
    assert [service.problems(record) for record in records] == [[]] * COUNT


def test_sampling_is_reproducible_from_the_seed(settings, table, records):
    assert real_records(table, settings.features, COUNT, seed=settings.seed) == records
    assert real_records(table, settings.features, COUNT, seed=settings.seed + 1) != records


def test_every_anomaly_gets_the_status_it_is_tagged_with(served, records, spread, service):
    cases = anomalous_cases(records, served[1], spread, seed=7)
    kinds = Counter((case["kind"], case["expected_status"]) for case in cases)
    assert kinds == {
        ("noisy", 200): COUNT,
        ("out_of_range", 400): COUNT,
        ("unknown_category", 200): COUNT,
        ("missing_optional", 200): COUNT,
        ("missing_required", 400): COUNT,
    }
    for case in cases:
        assert status(service, case["record"]) == case["expected_status"], case
        if case["expected_status"] == 400:  # refused for the field the case names, and only for it
            assert {problem[0] for problem in service.problems(case["record"])} == {case["field"]}, case


def test_anomalies_are_reproducible_from_the_seed(served, records, spread):
    assert anomalous_cases(records, served[1], spread, seed=7) == anomalous_cases(records, served[1], spread, seed=7)
    assert anomalous_cases(records, served[1], spread, seed=7) != anomalous_cases(records, served[1], spread, seed=8)


def test_adversarial_records_are_valid_and_change_only_present_numbers(served, adversarial, service):
    bounds = FieldBounds(served[1])
    for case in adversarial:
        record, original = case["record"], case["original"]
        assert service.problems(record) == [], case
        assert set(record) == set(original)
        assert all(record[name] == original[name] for name in bounds.categorical if name in original)
        assert all(isinstance(record[name], int) for name in bounds.numeric if bounds.integer[name] and name in record)
    assert sum(case["record"] != case["original"] for case in adversarial) == len(adversarial)


def test_adversarial_probabilities_are_what_the_model_answers(adversarial, service):
    before = json.loads(service.handle([(json.dumps([c["original"] for c in adversarial]), None)])[0].body)
    after = json.loads(service.handle([(json.dumps([c["record"] for c in adversarial]), None)])[0].body)
    assert [a["late_probability"] for a in before] == pytest.approx(
        [c["probability_before"] for c in adversarial], abs=1e-6
    )
    assert [a["late_probability"] for a in after] == pytest.approx(
        [c["probability_after"] for c in adversarial], abs=1e-6
    )


def test_fgsm_raises_the_late_probability_more_than_random_steps_of_the_same_size(served, records, spread, adversarial):
    model, schema = served
    shift = probability_shift(adversarial)
    assert shift["mean_shift"] > 0 and shift["share_raised"] > 0.9, shift

    bounds, rng = FieldBounds(schema), random.Random(0)
    epsilon = adversarial[0]["epsilon"]
    random_steps = [
        {
            **r,
            **{
                name: bounds.within(name, r[name] + rng.choice((-1, 1)) * epsilon * spread[name])
                for name in bounds.numeric
                if r.get(name) is not None
            },
        }
        for r in records
    ]
    before, _ = late_probabilities(model, schema, records)
    after, _ = late_probabilities(model, schema, random_steps)
    assert shift["mean_shift"] > 2 * abs(float((after - before).mean())), shift


def test_write_payloads_writes_the_same_three_files_for_the_same_seed(settings, metrics, table, tmp_path):
    # metrics: the adversarial cases are scored by the exported model.pt
    first = write_payloads(settings, tmp_path / "first", 40, table=table)
    second = write_payloads(settings, tmp_path / "second", 40, table=table)
    for name in (RECORDS_FILE, ANOMALOUS_FILE, ADVERSARIAL_FILE):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert len(json.loads((first / RECORDS_FILE).read_text())) == 40
    assert len(json.loads((first / ANOMALOUS_FILE).read_text())) == 5 * 40
    adversarial = json.loads((first / ADVERSARIAL_FILE).read_text())
    assert {case["expected_status"] for case in adversarial} == {200}
    assert all({"probability_before", "probability_after", "original"} <= set(case) for case in adversarial)
