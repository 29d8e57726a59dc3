"""The network and its preprocessing, built from a tiny hand-made config."""

import math

import pandas as pd
import pytest
import torch

from model.config import load_settings
from model.training.inputs import model_inputs
from model.training.network import MISSING, UNKNOWN, TabularNet
from model.training.preprocessing import fit_preprocessing

FEATURES = load_settings().features.model_copy(
    update={
        "categorical": {k: v for k, v in load_settings().features.categorical.items() if k in ("carrier", "origin")},
        "numeric": {k: v for k, v in load_settings().features.numeric.items() if k in ("month", "distance", "precip")},
    }
)


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "carrier": ["UA", "UA", "AA", "B6", ""],
            "origin": ["EWR", "JFK", "JFK", "LGA", "EWR"],
            "month": [1.0, 6.0, 12.0, 3.0, 7.0],
            "distance": [100.0, 200.0, float("nan"), 400.0, 500.0],
            "precip": [0.0, 0.1, 0.0, float("nan"), 0.0],
        }
    )


@pytest.fixture
def network(frame):
    torch.manual_seed(0)
    config = fit_preprocessing(frame, FEATURES, min_category_count=2)
    return TabularNet(**config, embedding_dim=3, hidden=[8], dropout=0.0).eval()


def test_vocabulary_keeps_frequent_categories_and_reserves_unknown_and_missing(frame):
    config = fit_preprocessing(frame, FEATURES, min_category_count=2)
    carrier, origin = config["vocabularies"]
    assert carrier == {"": MISSING, "UA": 2}  # AA and B6 are too rare
    assert set(origin) == {"", "EWR", "JFK"}
    assert UNKNOWN not in carrier.values()


def test_imputation_and_scaling_come_from_training_rows(frame):
    config = fit_preprocessing(frame, FEATURES, min_category_count=1)
    distance = config["numeric"].index("distance")
    assert config["numeric_fill"][distance] == 300.0  # median of the present values
    assert config["periods"][config["numeric"].index("month")] == 12


def test_category_indices_map_unknown_and_missing(network):
    indices = network.category_indices([["UA", "ZZ", ""], ["EWR", "EWR", "XXX"]], 3)
    assert indices.tolist() == [[2, 2], [UNKNOWN, 2], [MISSING, UNKNOWN]]


def test_forward_gives_one_probability_per_row(network, frame):
    categorical, numeric = model_inputs(frame, network.categorical, network.numeric)
    probability = network(categorical, numeric)
    assert probability.shape == (len(frame),)
    assert ((probability > 0) & (probability < 1)).all()


def test_missing_numbers_are_imputed_not_propagated(network):
    numeric = torch.tensor([[math.nan, math.nan, math.nan], [1.0, math.inf, -math.inf]])
    probability = network([["UA", "UA"], ["EWR", "EWR"]], numeric)
    assert torch.isfinite(probability).all()


def test_torchscript_matches_eager(network, frame):
    categorical, numeric = model_inputs(frame, network.categorical, network.numeric)
    scripted = torch.jit.script(network)
    torch.testing.assert_close(scripted(categorical, numeric), network(categorical, numeric))


def test_december_sits_next_to_january(network):
    def encoded(month):
        angle = network.angular * torch.tensor([float(month)])
        return torch.cat([torch.sin(angle), torch.cos(angle)])

    assert torch.allclose(encoded(12), encoded(0), atol=1e-6)
    assert (encoded(12) - encoded(1)).norm() < (encoded(6) - encoded(1)).norm()


def test_wrong_input_shapes_are_refused_with_a_message(network):
    with pytest.raises(Exception, match="categorical columns"):
        network([["UA"]], torch.zeros(1, 3))
    with pytest.raises(Exception, match="numeric input"):
        network([["UA"], ["EWR"]], torch.zeros(1, 2))
    with pytest.raises(Exception, match="has 2 values for 1 rows"):
        network([["UA", "AA"], ["EWR"]], torch.zeros(1, 3))


def test_model_inputs_turn_missing_into_empty_string_and_nan():
    frame = pd.DataFrame({"carrier": ["UA", None], "distance": [1.0, None]})
    categorical, numeric = model_inputs(frame, ["carrier"], ["distance"])
    assert categorical == [["UA", ""]]
    assert numeric.dtype == torch.float32 and math.isnan(numeric[1, 0])
