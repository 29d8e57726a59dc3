"""Behavioural tests of the trained model (invariance, direction, minimum functionality).

Directions are checked only where the data support them. Over 2013 the late share rises
steadily with the scheduled hour (10% at 5 am, 35% at 9 pm) and with precipitation
(22% dry, 45% with light rain, 61% above 0.3 in/h), and the full-year model follows both.
In the January-February training months of the test slice, light rain (up to 0.05 in/h)
doubles the late share (22% to 41%) but heavier rain is rare (940 flights) and not worse
(27-36%), so the rain test uses light rain.
"""

import json

import numpy as np
import pytest

from handler.service import PredictionService
from model.config import ROOT
from model.data.split import split_rows
from model.training.inputs import model_inputs

SAMPLE = json.loads((ROOT / "sample_input.json").read_text())


@pytest.fixture(scope="module")
def rows(table):
    return split_rows(table, "test").sample(2000, random_state=3)


def probabilities(scripted, frame):
    categorical, numeric = model_inputs(frame, scripted.categorical, scripted.numeric)
    return scripted(categorical, numeric).detach().numpy()


def test_invariance_two_unseen_categories_are_the_same_unknown(scripted, rows):
    first = probabilities(scripted, rows.assign(dest="QQQ", manufacturer="ACME AERO"))
    second = probabilities(scripted, rows.assign(dest="ZZZ", manufacturer="NOBODY INC"))
    np.testing.assert_array_equal(first, second)


def test_invariance_request_spelling_changes_nothing(schema):
    """Field order and 12 vs 12.0 are the same request."""
    seen = []
    service = PredictionService(schema, lambda categorical, numeric: seen.append((categorical, numeric)) or [0.5])
    service.handle([(json.dumps(SAMPLE), "application/json")])
    reordered = dict(reversed(list({**SAMPLE, "month": 12.0, "distance": 719.0}.items())))
    service.handle([(json.dumps(reordered), "application/json")])
    assert seen[0] == seen[1]


def test_direction_later_departures_are_not_less_risky(scripted, rows):
    morning = probabilities(scripted, rows.assign(hour=7.0))
    evening = probabilities(scripted, rows.assign(hour=19.0))
    assert evening.mean() > morning.mean()
    assert np.mean(evening < morning - 0.05) < 0.05  # hardly any row flips the other way


def test_direction_rain_is_not_less_risky(scripted, rows):
    dry = probabilities(scripted, rows.assign(precip=0.0))
    wet = probabilities(scripted, rows.assign(precip=0.03))
    assert wet.mean() >= dry.mean() - 0.005
    assert np.mean(wet < dry - 0.05) < 0.05


def test_minimum_functionality_storm_evening_beats_calm_morning(scripted, rows):
    calm = rows.assign(hour=6.0, precip=0.0, visib=10.0, wind_speed=5.0, wind_gust=np.nan)
    storm = rows.assign(hour=19.0, precip=0.04, visib=1.0, wind_speed=30.0, wind_gust=45.0)
    assert probabilities(scripted, storm).mean() > probabilities(scripted, calm).mean() + 0.05


def test_minimum_functionality_predictions_spread_and_stay_probabilities(scripted, rows):
    predicted = probabilities(scripted, rows)
    assert ((predicted > 0) & (predicted < 1)).all()
    assert predicted.std() > 0.05
