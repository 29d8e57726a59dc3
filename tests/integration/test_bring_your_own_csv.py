"""Any CSV whose columns the config names goes through the whole pipeline without code
changes: validate -> train -> export -> archive -> serve. The CSV here is built by the test
and shares no column name with the flights data."""

import json

import numpy as np
import pandas as pd
import pytest
import requests

from harness.torchserve import torchserve
from model.artifact.archive import build_archive
from model.artifact.export import export_model
from model.artifact.predict import load_served_model, predict_frame
from model.data.prepare import prepare
from model.training.train import train


def machine_failures(rows: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Hourly readings of machines; hot, shaking presses fail more often."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2022-01-01", periods=rows, freq="h"),
            "machine_type": rng.choice(["press", "lathe", "mill"], rows),
            "site": rng.choice(["north", "south", None], rows, p=[0.5, 0.45, 0.05]),
            "temperature_c": rng.normal(60, 10, rows),
            "vibration": rng.gamma(2.0, 0.5, rows),
            "load_pct": rng.integers(0, 101, rows),
        }
    )
    frame.loc[rng.random(rows) < 0.05, "temperature_c"] = np.nan
    logit = (
        -2.0
        + 0.09 * (frame["temperature_c"].fillna(60) - 60)
        + 0.9 * frame["vibration"]
        + 1.2 * (frame["machine_type"] == "press")
    )
    frame["failed"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture(scope="module")
def csv_settings(settings, tmp_path_factory):
    work = tmp_path_factory.mktemp("byo-csv")
    machine_failures().to_csv(work / "readings.csv", index=False)
    paths = {
        key: work / name
        for key, name in {
            "processed": "table.parquet",
            "quality": "quality.parquet",
            "quality_db": "quality.sqlite",
            "model_dir": "model",
            "export_dir": "export",
            "metrics": "metrics.json",
            "comparison": "comparison.json",
            "model_store": "store",
            "report_dir": "report",
            "registry": "registry",
            "raw": "raw.parquet",
            "plots": "plots",
            "tracking": "mlflow",
        }.items()
    }
    return settings.with_overrides(
        {
            "data": {
                "source": "csv",
                "target": "failure",
                "csv": {"path": work / "readings.csv", "time_column": "ts", "target_column": "failed"},
                "window": {"start": "2022-01-01", "end": "2023-01-01"},
                "split": {"valid_start": "2022-06-01", "test_start": "2022-07-15"},
            },
            "features": {
                "categorical": {"machine_type": {"required": True}, "site": {"required": False}},
                "numeric": {
                    "temperature_c": {"required": False, "min": -50, "max": 200},
                    "vibration": {"required": True, "min": 0, "max": 100},
                    "load_pct": {"required": True, "min": 0, "max": 100, "integer": True},
                },
            },
            "paths": paths,
        }
    )


def test_a_csv_with_its_own_columns_is_validated_trained_archived_and_served(csv_settings, tmp_path):
    table = prepare(csv_settings)
    metrics = train(csv_settings, table)
    export_model(csv_settings.paths.model_dir, csv_settings.paths.export_dir)
    assert metrics["test"]["roc_auc"] > 0.7
    archive = build_archive(csv_settings.paths.model_dir, csv_settings.paths.model_store)

    record = {"machine_type": "press", "site": "north", "temperature_c": 75.5, "vibration": 2.5, "load_pct": 80}
    model, schema = load_served_model(csv_settings.paths.export_dir)
    offline = predict_frame(model, schema, pd.DataFrame([record]))["failure_probability"].iloc[0]
    with torchserve(archive.parent, tmp_path / "torchserve") as server:
        url = f"{server.inference_url}/predictions/mymodel"
        answer = requests.post(url, json=record, timeout=30)
        refused = requests.post(url, json={**record, "machine_type": None}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"failure_probability", "failure", "model_version"}
    assert abs(answer.json()["failure_probability"] - offline) <= 1e-6
    assert refused.status_code == 400 and json.loads(refused.text)["errors"][0]["field"] == "machine_type"


def test_a_csv_missing_a_configured_column_is_refused_by_name(csv_settings, tmp_path):
    machine_failures(200).drop(columns="vibration").to_csv(tmp_path / "short.csv", index=False)
    broken = csv_settings.with_overrides({"data": {"csv": {"path": tmp_path / "short.csv"}}})
    with pytest.raises(ValueError, match="missing column.*vibration"):
        prepare(broken)
