"""The model trained on the slice: quality against a linear reference, and the exported artifact."""

import json

import numpy as np
import pytest
import torch

from model.analysis.evaluate import compare_with_logistic_regression
from model.data.split import split_rows
from model.training.inputs import model_inputs
from model.training.weights import CONFIG, load_network


def test_metrics_cover_validation_and_test(metrics):
    for split in ("valid", "test"):
        assert set(metrics[split]) >= {"roc_auc", "pr_auc", "brier", "log_loss", "accuracy"}
        assert 0 < metrics[split]["brier"] < 0.25
    assert metrics["epochs"] >= 1


def test_test_auc_is_clearly_above_chance_and_close_to_logistic_regression(settings, table, metrics, schema):
    comparison = compare_with_logistic_regression(settings, table, metrics, schema["x-model"]["threshold"])
    mlp, linear = comparison["test"]["mlp"]["roc_auc"], comparison["test"]["logistic_regression"]["roc_auc"]
    assert mlp >= 0.60
    assert mlp >= linear - 0.03, f"MLP {mlp:.3f} vs logistic regression {linear:.3f}"


def test_saved_weights_reload_to_the_same_predictions(settings, table, scripted):
    network, config = load_network(settings.paths.model_dir)
    test = split_rows(table, "test").head(500)
    categorical, numeric = model_inputs(test, config["categorical"], config["numeric"])
    with torch.no_grad():
        torch.testing.assert_close(scripted(categorical, numeric), network(categorical, numeric))


def test_version_ends_in_the_weights_hash(settings, metrics):
    config = json.loads((settings.paths.model_dir / CONFIG).read_text())
    assert config["version"] == metrics["model_version"]
    assert config["version"].startswith(settings.model.version + "-")


def test_schema_is_the_feature_contract(settings, schema):
    assert list(schema["properties"]) == settings.features.names
    assert schema["required"] == [
        n for n, f in {**settings.features.categorical, **settings.features.numeric}.items() if f.required
    ]
    assert schema["properties"]["month"]["minimum"] == 1 and schema["properties"]["month"]["type"] == "integer"
    assert schema["properties"]["wind_gust"]["type"] == ["number", "null"]
    assert schema["additionalProperties"] is False


def test_unknown_categories_and_missing_values_still_get_a_probability(scripted, table, settings):
    row = split_rows(table, "test").head(1).copy()
    row[list(settings.features.categorical)] = "never-seen"
    optional = [n for n, f in settings.features.numeric.items() if not f.required]
    row[optional] = np.nan
    categorical, numeric = model_inputs(row, scripted.categorical, scripted.numeric)
    probability = scripted(categorical, numeric).item()
    assert 0 < probability < 1


@pytest.mark.parametrize("rows", [1, 2, 33])
def test_a_row_gets_the_same_probability_whatever_its_batch(scripted, table, rows):
    batch = split_rows(table, "test").head(rows)
    categorical, numeric = model_inputs(batch, scripted.categorical, scripted.numeric)
    together = scripted(categorical, numeric)
    alone = scripted([column[:1] for column in categorical], numeric[:1])
    assert abs(together[0].item() - alone.item()) < 1e-6


def test_the_served_threshold_is_the_cheapest_on_the_validation_month(settings, metrics, schema):
    """serving.threshold: min_cost. With a missed late flight four times the price of a false
    alarm, warning pays from well below an even chance."""
    assert settings.serving.threshold == "min_cost"
    prices = settings.evaluation.missed_positive_cost, settings.evaluation.false_alarm_cost
    assert metrics["threshold"] < 0.5
    assert abs(metrics["threshold"] - prices[1] / sum(prices)) <= 0.15
    assert schema["x-model"]["threshold"] == metrics["threshold"]
