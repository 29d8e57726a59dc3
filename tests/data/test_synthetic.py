"""Expectations on the synthetic source: reproducible, faulty at the configured rates, drifting
when told to, and written where the reader finds it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.config import ROOT, Settings, SyntheticSource, load_settings
from model.data import synthetic
from model.data.sources import TARGET, TIME, SourceError, load_source
from model.data.synthetic import FAULT_CODES, READINGS, STATION, generate, write_synthetic

SYNTHETIC = ROOT / "configs" / "synthetic.yaml"


def source(**changes) -> SyntheticSource:
    """The shipped synthetic config, two years, with `changes` applied."""
    base = load_settings(SYNTHETIC).data.synthetic
    return SyntheticSource.model_validate({**base.model_dump(), "days": 730, **changes})


def small_settings(tmp_path: Path) -> Settings:
    """Ninety days from the shipped config: January-February to train/, March to test/."""
    paths = {
        name: tmp_path / "out" / name
        for name in (
            "processed",
            "quality",
            "quality_db",
            "model_dir",
            "export_dir",
            "metrics",
            "comparison",
            "model_store",
            "report_dir",
            "registry",
            "raw",
            "plots",
            "tracking",
        )
    }
    return load_settings(SYNTHETIC).with_overrides(
        {
            "data": {
                "window": {"start": "2021-01-01", "end": "2021-04-01"},
                "split": {"valid_start": "2021-02-15", "test_start": "2021-03-01"},
                "synthetic": {
                    "dir": tmp_path / "raw",
                    "start": "2021-01-01",
                    "days": 90,
                    "drift_start": None,
                    "test_start": "2021-03-01",
                },
            },
            "paths": paths,
        }
    )


def test_the_same_seed_gives_the_same_table_and_another_seed_another():
    config = source()
    pd.testing.assert_frame_equal(generate(config, 7), generate(config, 7))
    assert not generate(config, 7)["temp"].equals(generate(config, 8)["temp"])


def test_rows_are_days_times_stations_with_the_contract_columns():
    config = source(days=30, stations=3)
    table = generate(config, 1)
    settings = load_settings(SYNTHETIC)
    assert len(table) == 30 * 3
    assert set(settings.features.names) | {TIME, TARGET} == set(table.columns)
    assert sorted(table[STATION].unique()) == ["S1", "S2", "S3"]
    assert (table.groupby(TIME)[STATION].nunique() == 3).all()
    assert table["day_of_year"].iloc[0] == pd.Timestamp(config.start).day_of_year


def test_missing_values_and_anomalies_come_at_about_the_configured_rates():
    missing_rate, anomaly_rate = 0.05, 0.04
    faulty = generate(source(missing_rate=missing_rate, anomaly_rate=anomaly_rate), 3)
    clean = generate(source(missing_rate=0.0, anomaly_rate=0.0), 3)
    assert clean[list(READINGS)].notna().all().all()
    for name in READINGS:
        logged, true = faulty[name], clean[name]
        missing = logged.isna()
        codes = logged.isin(FAULT_CODES)
        stuck = ~missing & ~codes & (logged != true)
        assert missing.mean() == pytest.approx(missing_rate, abs=0.015), name
        # Half of the anomalies are fault codes; a missing reading hides an anomaly under it.
        assert codes.mean() == pytest.approx(anomaly_rate / 2 * (1 - missing_rate), abs=0.01), name
        assert 0 < stuck.mean() <= anomaly_rate / 2 + 0.01, name
        # A stuck reading repeats the station's last reading, from one of the days before.
        earlier = [true.groupby(faulty[STATION]).shift(days) for days in range(1, 6)]
        assert pd.concat([logged[stuck] == before[stuck] for before in earlier], axis=1).any(axis=1).all(), name
        # Everything else is the fault-free reading itself.
        assert (logged[~missing & ~codes & ~stuck] == true[~missing & ~codes & ~stuck]).all(), name
    assert faulty[TARGET].equals(clean[TARGET]), "alerts come from the true weather, not from the faults"


def test_fault_codes_lie_outside_every_physical_bound():
    numeric = load_settings(SYNTHETIC).features.numeric
    for name in READINGS:
        assert all(not numeric[name].min <= code <= numeric[name].max for code in FAULT_CODES), name


def test_the_target_is_learnable_from_the_features():
    table = generate(source(missing_rate=0.0, anomaly_rate=0.0), 5)
    hot = table["temp"] > table["temp"].quantile(0.75)
    assert 0.1 < table[TARGET].mean() < 0.5
    assert table.loc[hot, TARGET].mean() > 2 * table.loc[~hot, TARGET].mean()


def test_the_drift_shifts_temperature_from_drift_start_and_not_before():
    quiet = source(missing_rate=0.0, anomaly_rate=0.0, drift_start=None)
    shifted = source(missing_rate=0.0, anomaly_rate=0.0, drift_start="2022-01-01", drift_shift=5.0)
    before, after = generate(quiet, 11), generate(shifted, 11)
    late = after[TIME] >= "2022-01-01"
    difference = after["temp"] - before["temp"]
    assert (difference[~late] == 0).all()
    assert difference[late].between(4.9, 5.1).all()  # readings are rounded to 0.1
    assert after.loc[late, TARGET].mean() > before.loc[late, TARGET].mean() + 0.05
    for name in ("humidity", "pressure"):
        assert after[name].equals(before[name]), name


def test_files_land_in_train_and_test_split_at_test_start(tmp_path):
    settings = small_settings(tmp_path)
    stale = tmp_path / "raw" / "train" / "2020-12.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("left over from a longer run\n")
    written = write_synthetic(settings)
    assert not stale.exists()
    train = sorted(p.name for p in (tmp_path / "raw" / "train").glob("*.csv"))
    test = sorted(p.name for p in (tmp_path / "raw" / "test").glob("*.csv"))
    assert (train, test) == (["2021-01.csv", "2021-02.csv"], ["2021-03.csv"])
    assert len(written) == 3
    for path in written:
        times = pd.to_datetime(pd.read_csv(path)[TIME])
        in_test = times >= settings.data.synthetic.test_start
        assert in_test.all() if path.parent.name == "test" else not in_test.any(), path


def test_the_written_files_read_back_as_the_generated_table(tmp_path):
    settings = small_settings(tmp_path)
    write_synthetic(settings)
    loaded = load_source(settings)
    expected = generate(settings.data.synthetic, settings.seed)
    assert list(loaded.columns) == [TIME, *settings.features.names, TARGET]
    assert len(loaded) == len(expected)
    assert (loaded[TIME].to_numpy() == expected[TIME].to_numpy()).all()
    assert (loaded[STATION].astype(str).to_numpy() == expected[STATION].to_numpy()).all()
    assert loaded[TARGET].to_numpy().tolist() == expected[TARGET].to_numpy().tolist()
    for name in settings.features.numeric:
        np.testing.assert_array_equal(
            loaded[name].to_numpy(dtype="float64"), expected[name].to_numpy(dtype="float64"), err_msg=name
        )


def test_a_synthetic_source_without_its_section_says_so():
    settings = load_settings(SYNTHETIC).with_overrides({"data": {"synthetic": None}})
    with pytest.raises(SourceError, match="data.synthetic section is not set"):
        load_source(settings)


def test_the_command_line_writes_what_its_config_asks(tmp_path, monkeypatch):
    config = tmp_path / "params.yaml"
    config.write_text(
        f"base: {SYNTHETIC}\ndata:\n  synthetic: {{dir: {tmp_path / 'cli'}, days: 40, test_start: '2021-02-01'}}\n"
    )
    monkeypatch.setattr(sys, "argv", ["synthetic", "--config", str(config)])
    synthetic.main()
    assert [p.name for p in (tmp_path / "cli" / "train").glob("*.csv")] == ["2021-01.csv"]
    assert len(pd.read_csv(tmp_path / "cli" / "test" / "2021-02.csv")) == 9 * 4
