"""Drift detection on the synthetic source: quiet when nothing changed, flags what moved and only
that, and writes what the report and the monitoring read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.analysis import drift
from model.analysis.drift import (
    CATEGORICAL,
    PREDICTION,
    detect_drift,
    drift_section,
    feature_drift,
    numeric_drift,
    prediction_drift,
)
from model.analysis.layout import render
from model.analysis.tabular_features import logistic_regression
from model.artifact.export import export_model
from model.artifact.predict import load_served_model, predict_frame, predict_probability, probability_column
from model.config import ROOT, Settings, load_settings
from model.data.prepare import load_table, prepare
from model.data.quality import clean
from model.data.sources import TARGET, TIME
from model.data.split import SPLIT, split_rows
from model.data.synthetic import STATION, generate, write_synthetic
from model.training.train import train
from tests.tiers import slow_fixture

SYNTHETIC = ROOT / "configs" / "synthetic.yaml"
SECOND_YEAR = "2022-01-01"


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The shipped synthetic config; in this module it stands in for the flights slice."""
    return load_settings(SYNTHETIC)


def two_years(settings: Settings, shift: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first year as reference, the second as current (warmer by `shift` °C), both cleaned
    as the pipeline cleans them."""
    source = settings.data.synthetic.model_copy(update={"days": 730, "drift_start": SECOND_YEAR, "drift_shift": shift})
    table = clean(generate(source, seed), settings)
    return table[table[TIME] < SECOND_YEAR], table[table[TIME] >= SECOND_YEAR]


def flagged(table: pd.DataFrame) -> set[str]:
    return set(table.loc[table["drifted"], "feature"])


def test_a_batch_from_the_same_process_is_not_flagged(settings):
    reference, current = two_years(settings)
    table = feature_drift(reference, current, settings)
    assert list(table["feature"]) == settings.features.names
    assert flagged(table) == set()
    assert (table["psi"] < settings.drift.psi_threshold / 2).all()


def test_a_warmer_batch_is_flagged_on_temperature_and_nothing_else(settings):
    reference, current = two_years(settings, shift=6.0)
    table = feature_drift(reference, current, settings).set_index("feature")
    assert flagged(table.reset_index()) == {"temp"}
    assert table.loc["temp", "psi"] >= settings.drift.psi_threshold
    assert table.loc["temp", "p_value"] < settings.drift.p_value


def test_a_shift_between_stations_is_flagged_by_chi_square_and_psi(settings):
    reference, current = two_years(settings)
    # Most of the current batch now comes from S1, as if the other stations had stopped sending.
    skewed = pd.concat([current[current[STATION] == "S1"], current[current[STATION] != "S1"].iloc[::4]])
    row = feature_drift(reference, skewed, settings).set_index("feature").loc[STATION]
    assert row["kind"] == CATEGORICAL and row["test"] == "chi-square"
    assert row["psi"] >= settings.drift.psi_threshold and row["p_value"] < settings.drift.p_value
    assert row["drifted"]


def test_a_station_never_seen_in_training_is_flagged(settings):
    reference, current = two_years(settings)
    renamed = current.assign(**{STATION: current[STATION].where(current[STATION] != "S2", "S9")})
    table = feature_drift(reference, renamed, settings)
    assert flagged(table) == {STATION}


def test_a_sensor_that_stops_reporting_is_flagged_through_its_missing_share(settings):
    reference, current = two_years(settings)
    table = feature_drift(reference, current.assign(humidity=np.nan), settings).set_index("feature")
    assert table.loc["humidity", "drifted"]
    assert np.isnan(table.loc["humidity", "p_value"])  # no values to test: PSI decides alone


def test_on_large_samples_a_negligible_shift_is_not_flagged_though_its_p_value_is_tiny(settings):
    rng = np.random.default_rng(0)
    row = numeric_drift("x", pd.Series(rng.normal(0, 1, 50_000)), pd.Series(rng.normal(0.05, 1, 50_000)), settings)
    assert row["p_value"] < settings.drift.p_value
    assert row["psi"] < settings.drift.psi_threshold
    assert not row["drifted"]


def test_on_small_samples_a_large_psi_by_chance_is_not_flagged(settings):
    rng = np.random.default_rng(0)
    row = numeric_drift("x", pd.Series(rng.normal(0, 1, 40)), pd.Series(rng.normal(0, 1, 40)), settings)
    assert row["psi"] >= settings.drift.psi_threshold  # ten bins over forty rows are noisy
    assert row["p_value"] >= settings.drift.p_value
    assert not row["drifted"]


def test_prediction_drift_follows_the_inputs_the_model_relies_on(settings):
    reference, same = two_years(settings)
    _, warmer = two_years(settings, shift=6.0)
    model = logistic_regression(settings).fit(reference[settings.features.names], reference[TARGET])

    def probabilities(frame: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(frame[settings.features.names])[:, 1]

    quiet = prediction_drift(probabilities(reference), probabilities(same), settings).iloc[0]
    moved = prediction_drift(probabilities(reference), probabilities(warmer), settings).iloc[0]
    assert quiet["feature"] == f"{settings.data.target}_probability" and quiet["kind"] == PREDICTION
    assert not quiet["drifted"]
    assert moved["drifted"] and moved["psi"] > quiet["psi"]


def test_the_json_and_figures_are_written_and_agree_with_the_table(settings, tmp_path):
    reference, current = two_years(settings, shift=6.0)
    rng = np.random.default_rng(1)
    report = detect_drift(
        reference, current, settings, tmp_path / "drift", rng.beta(2, 5, len(reference)), rng.beta(5, 2, len(current))
    )
    saved = json.loads(report.json_path.read_text(), parse_constant=lambda token: pytest.fail(f"{token} in JSON"))
    assert report.json_path == tmp_path / "drift" / "drift.json"
    assert set(saved["features"]) == set(settings.features.names)
    assert saved["features"]["temp"]["drifted"] and not saved["features"]["humidity"]["drifted"]
    assert saved["summary"]["drifted_features"] == int(report.table.query("kind != @PREDICTION")["drifted"].sum())
    assert saved["summary"]["drifted"] == ["temp"]
    assert saved["prediction"]["drifted"] and saved["summary"]["prediction_drifted"]
    assert (saved["reference_rows"], saved["current_rows"]) == (len(reference), len(current))
    assert [path.name for _, path in report.figures] == ["psi.png", "distributions.png", "predictions.png"]
    for _, path in report.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_the_report_section_shows_the_table_and_figures(settings, tmp_path):
    reference, current = two_years(settings, shift=6.0)
    report = detect_drift(reference, current, settings, tmp_path)
    section = drift_section(report, settings)
    assert section.title == "Drift"
    assert section.intro.startswith(f"1 of {len(settings.features.names)} features drift")
    assert "not scored" in section.intro
    assert section.tables[0][1] is report.table
    assert [path.name for _, path in section.figures] == ["psi.png", "distributions.png"]
    assert "data:image/png;base64," in render("report", "summary", [section])


@pytest.fixture(scope="module")
@slow_fixture
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A year of synthetic data written and prepared, and a model trained on it for one epoch;
    the test split (October on) is 6 °C warmer."""
    work = tmp_path_factory.mktemp("synthetic")
    paths = {name: work / name for name in ("model_dir", "export_dir", "model_store", "report_dir")}
    paths |= {
        "processed": work / "table.parquet",
        "quality_db": work / "quality.sqlite",
        "quality": work / "quality.parquet",
        "metrics": work / "metrics.json",
        "comparison": work / "comparison.json",
    }
    settings = load_settings(SYNTHETIC).with_overrides(
        {
            "data": {
                "window": {"start": "2021-01-01", "end": "2022-01-01"},
                "split": {"valid_start": "2021-07-01", "test_start": "2021-10-01"},
                "synthetic": {
                    "dir": work / "raw",
                    "days": 365,
                    "drift_start": "2021-10-01",
                    "drift_shift": 6.0,
                    "test_start": "2021-10-01",
                },
            },
            "train": {"max_epochs": 1},
            "paths": paths,
        }
    )
    write_synthetic(settings)
    train(settings, prepare(settings))
    export_model(settings.paths.model_dir, settings.paths.export_dir)
    return settings


def test_the_probability_helper_gives_the_scored_files_probabilities(pipeline):
    table = load_table(pipeline)
    model, schema = load_served_model(pipeline.paths.export_dir)
    probability = predict_probability(model, schema, table)
    expected = predict_frame(model, schema, table)[probability_column(schema)]
    assert probability_column(schema) == f"{pipeline.data.target}_probability"
    assert probability.shape == (len(table),)
    np.testing.assert_array_equal(probability, expected.to_numpy())
    assert ((probability > 0) & (probability < 1)).all()


def test_the_command_line_compares_the_test_split_with_the_train_split(pipeline, monkeypatch, capsys, tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text(
        json.dumps({"base": str(SYNTHETIC), **json.loads(pipeline.model_dump_json(include={"paths", "data", "train"}))})
    )
    monkeypatch.setattr(sys, "argv", ["drift", "--config", str(config)])
    drift.main()
    printed = Path(capsys.readouterr().out.strip())
    assert printed == pipeline.paths.report_dir / "drift" / "drift.json"
    saved = json.loads(printed.read_text())
    table = load_table(pipeline)
    assert saved["reference_rows"] == int((table[SPLIT] == "train").sum())
    assert saved["current_rows"] == int((table[SPLIT] == "test").sum())
    assert "temp" in saved["summary"]["drifted"]
    assert saved["prediction"]["name"] == "alert_probability"
    assert (printed.parent / "predictions.png").exists()


def test_a_file_of_request_fields_is_cleaned_like_the_training_data(pipeline, tmp_path):
    table = load_table(pipeline)
    test = split_rows(table, "test")
    requests = test[pipeline.features.names].drop(columns="humidity")
    requests["temp"] = requests["temp"].fillna(-999.0)  # fault codes must not count as cold days
    path = tmp_path / "requests.csv"
    requests.to_csv(path, index=False)
    report = drift.drift_job(pipeline, path)
    rows = report.table.set_index("feature")
    assert rows.loc["humidity", "drifted"]  # the column is gone: every value is missing
    split = feature_drift(split_rows(table, "train"), test, pipeline).set_index("feature")
    assert rows.loc["temp", "psi"] == pytest.approx(split.loc["temp", "psi"])
    assert rows.loc["temp", "drifted"]
