"""Expectations on the prepared flights table itself."""

import pandas as pd

from model.data.sources import POST_DEPARTURE, TARGET, TIME
from model.data.split import SPLIT, SPLITS, split_rows


def test_columns_are_the_feature_contract_plus_time_target_and_split(table, settings):
    assert list(table.columns) == [TIME, *settings.features.names, TARGET, SPLIT]


def test_no_post_departure_column_leaks_into_the_features(table, settings):
    assert not set(POST_DEPARTURE) & set(settings.features.names)
    assert not set(POST_DEPARTURE) & set(table.columns)


def test_types(table, settings):
    for name in settings.features.categorical:
        assert pd.api.types.is_string_dtype(table[name]), name
        assert table[name].notna().all(), f"{name}: missing categories must be the empty string"
    for name in settings.features.numeric:
        assert pd.api.types.is_float_dtype(table[name]), name
    assert set(table[TARGET].unique()) <= {0, 1}


def test_numbers_stay_within_their_declared_bounds(table, settings):
    for name, spec in settings.features.numeric.items():
        present = table[name].dropna()
        assert present.between(spec.min, spec.max).all(), name
        if spec.integer:
            assert (present == present.round()).all(), name


def test_required_features_are_always_present(table, settings):
    for name, spec in settings.features.numeric.items():
        if spec.required:
            assert table[name].notna().all(), name
    for name, spec in settings.features.categorical.items():
        if spec.required:
            assert (table[name] != "").all(), name


def test_cancelled_flights_are_dropped(raw_tables, table, settings):
    flights = raw_tables["flights"]
    in_window = flights[(flights["month"] >= 1) & (flights["month"] <= 3)]
    assert len(table) == in_window["arr_delay"].notna().sum()


def test_target_is_late_arrival_and_reasonably_balanced(raw_tables, table):
    flights = raw_tables["flights"]
    in_window = flights[(flights["month"] <= 3) & flights["arr_delay"].notna()]
    assert table[TARGET].mean() == (in_window["arr_delay"] > 15).mean()
    assert 0.1 < table[TARGET].mean() < 0.4


def test_splits_follow_time_and_are_all_populated(table, settings):
    order = {name: i for i, name in enumerate(SPLITS)}
    assert table[TIME].is_monotonic_increasing
    assert table[SPLIT].map(order).is_monotonic_increasing
    assert set(table[SPLIT]) == set(SPLITS)
    assert split_rows(table, "test").loc[:, TIME].min() >= pd.Timestamp(settings.data.split.test_start)


def test_origin_weather_joins_for_nearly_every_flight(table):
    assert table["temp"].notna().mean() > 0.95
    assert table["plane_year"].notna().mean() > 0.8
