"""Interpretation on the slice: attributions add up and name the request fields, importances
cover every field, and the business threshold is the cheapest one."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from model.analysis.interpret import (
    RESULTS,
    build_section,
    integrated_gradients,
    permutation_importance,
    run,
)
from model.artifact.predict import predict_probability
from model.data.split import split_rows
from model.training.inputs import model_inputs
from model.training.metrics import THRESHOLDS, choose_threshold, expected_cost
from model.training.network import UNKNOWN, TabularNet
from model.training.weights import load_network

# Integrated gradients integrate the gradient along a straight path with a quadrature rule. For
# a ReLU network the gradient is piecewise constant along the path, so the error comes only from
# the few steps that straddle a kink and shrinks roughly as 1/steps. At the configured 32 steps
# the sum then misses the logit change by a few hundredths at worst; 0.05 logits moves a
# probability near the 25 % late share by less than 0.01, well below what anyone reads into an
# attribution, while a field mapped twice or left out breaks the sum by far more.
COMPLETENESS_LOGITS = 0.05


@pytest.fixture(scope="module")
def network(settings, metrics):
    return load_network(settings.paths.model_dir)[0]


@pytest.fixture(scope="module")
def explained(table):
    return split_rows(table, "test").sample(100, random_state=0)


def _logit_change(network, frame):
    categorical, numeric = model_inputs(frame, network.categorical, network.numeric)
    indices = network.category_indices(categorical, len(frame))
    with torch.no_grad():
        reference = network.logits(torch.full_like(indices, UNKNOWN), network.fill.expand_as(numeric).clone())
        return (network.logits(indices, numeric) - reference).numpy()


def test_attributions_are_keyed_by_the_schema_fields(network, explained, schema, settings):
    attributions = integrated_gradients(network, explained, settings.evaluation.ig_steps)
    fields = [*schema["x-model"]["categorical"], *schema["x-model"]["numeric"]]
    assert list(attributions.columns) == [*fields, "logit", "reference_logit", "delta"]
    assert attributions.index.equals(explained.index)
    assert attributions["reference_logit"].nunique() == 1  # one reference flight for every row


def test_integrated_gradients_add_up_to_the_logit_change(network, explained, schema, settings):
    fields = [*schema["x-model"]["categorical"], *schema["x-model"]["numeric"]]
    steps = settings.evaluation.ig_steps
    attributions = integrated_gradients(network, explained, steps)
    change = _logit_change(network, explained)
    error = np.abs(attributions[fields].sum(axis=1).to_numpy() - change)
    assert error.max() < COMPLETENESS_LOGITS
    assert np.abs(change).mean() > 10 * COMPLETENESS_LOGITS  # the check is not passed by doing nothing
    finer = integrated_gradients(network, explained, 4 * steps)
    assert np.abs(finer["delta"]).mean() < np.abs(attributions["delta"]).mean()


def test_only_the_fields_that_differ_from_the_reference_get_attributions(network, explained, schema, settings):
    # Flights equal to the reference (numbers at their fill value, categories unknown) except
    # for a category, a plain number and a periodic number: the path moves along those only.
    moved = ["carrier", "hour", "month"]
    flights = explained.copy()
    for name, fill in zip(network.numeric, network.fill.tolist()):
        if name not in moved:
            flights[name] = fill
    for name in network.categorical:
        if name not in moved:
            flights[name] = "never-seen"
    attributions = integrated_gradients(network, flights, settings.evaluation.ig_steps)
    still = [name for name in [*schema["x-model"]["categorical"], *schema["x-model"]["numeric"]] if name not in moved]
    assert np.abs(attributions[still].to_numpy()).max() < 1e-6
    assert (attributions[moved].abs().mean() > 1e-3).all()


@pytest.mark.parametrize(
    "missing, encoding", [("constant", "one_hot"), ("median_indicator", "one_hot"), ("constant", "embedding")]
)
def test_attributions_add_up_for_every_preprocessing_variant(settings, network, explained, scripted, missing, encoding):
    config = json.loads((settings.paths.model_dir / "config.json").read_text())
    torch.manual_seed(0)
    variant = TabularNet.from_config({**config, "missing": missing, "categorical_encoding": encoding})
    columns = variant.field_columns
    assert sorted(p for positions in columns.values() for p in positions) == list(range(variant.mlp[0].in_features))
    attributions = integrated_gradients(variant, explained, settings.evaluation.ig_steps)
    error = np.abs(attributions[list(columns)].sum(axis=1).to_numpy() - _logit_change(variant, explained))
    assert error.max() < COMPLETENESS_LOGITS
    # the handler reads the same layout from model.pt
    assert dict(scripted.field_columns) == network.field_columns


def test_permutation_importance_covers_every_field_and_finds_a_signal(scripted, schema, table, settings):
    rows = split_rows(table, "test").sample(3000, random_state=0)
    importance = permutation_importance(scripted, schema, rows, repeats=2, seed=settings.seed)
    assert sorted(importance["feature"]) == sorted([*schema["x-model"]["categorical"], *schema["x-model"]["numeric"]])
    assert np.isfinite(importance["roc_auc_drop"]).all()
    strongest = importance.iloc[0]
    assert strongest["roc_auc_drop"] > 0.01 and min(strongest["drops"]) > 0
    assert importance["roc_auc_drop"].is_monotonic_decreasing


def test_expected_cost_counts_missed_late_flights_and_false_alarms():
    labels = np.array([1, 0, 1, 0])
    probability = np.array([0.9, 0.8, 0.3, 0.1])
    # at 0.5: one late flight missed (0.3), one false alarm (0.8); at 0.05 everybody is warned
    cost = expected_cost(labels, probability, np.array([0.5, 0.05]), missed_positive_cost=4, false_alarm_cost=1)
    assert cost.tolist() == [(4 * 1 + 1 * 1) / 4, (1 * 2) / 4]


def test_business_threshold_is_the_cheapest_on_validation_and_follows_the_prices(scripted, schema, table, settings):
    valid = split_rows(table, "valid")
    labels, probability = valid["target"].to_numpy(), predict_probability(scripted, schema, valid)
    prices = settings.evaluation.missed_positive_cost, settings.evaluation.false_alarm_cost
    assert prices[0] != prices[1]
    chosen = choose_threshold(labels, probability, *prices)
    costs = {
        float(t): ((probability < t) & (labels == 1)).sum() * prices[0]
        + ((probability >= t) & (labels == 0)).sum() * prices[1]
        for t in THRESHOLDS
    }
    assert costs[chosen] == min(costs.values())
    assert chosen != 0.5 and costs[chosen] < costs[0.5]
    # dearer misses warn earlier; dearer false alarms warn later
    assert chosen < 0.5 < choose_threshold(labels, probability, prices[1], prices[0])


def test_outputs_and_report_section(settings, table, metrics, tmp_path):
    cheap = settings.with_overrides(
        {
            "evaluation": {
                "permutation_rows": 1000,
                "permutation_repeats": 1,
                "explain_rows": 20,
                "knn_max_train_rows": 1000,
            }
        }
    )
    result = run(cheap, table, tmp_path)
    run(cheap, table, tmp_path / "again")  # the interpret stage gives the same files on a rerun
    for path in tmp_path.glob("*.*"):
        assert path.read_bytes() == (tmp_path / "again" / path.name).read_bytes(), path.name
    assert json.loads((tmp_path / RESULTS).read_text())["model_version"] == metrics["model_version"]
    assert set(result["calibration"]) == {"mlp", "logistic_regression", "knn", "decision_tree", "gradient_boosting"}
    assert result["logistic_regression_coefficients"] and "|---" in result["decision_tree"]["rules"]
    assert len(pd.read_csv(tmp_path / "attributions.csv")) == 20
    section = build_section(tmp_path)
    assert section.figures and all(path.stat().st_size > 1000 for _, path in section.figures)
    assert f"{result['business']['chosen_threshold']:.2f}" in section.intro
