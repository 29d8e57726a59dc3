"""Drafting a params file from a CSV: the choices it makes on a wide CSV of loans, and the
reasons it gives when a CSV cannot be drafted for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from model.config import load_settings
from model.data.draft_config import main, write_draft
from model.data.sources import load_source
from tests.data.wide_csv import EXTRA_NUMBERS, loans


@pytest.fixture(scope="module")
def loans_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loans")
    frame = loans()
    frame.to_csv(folder / "loans.csv", index=False)
    return folder / "loans.csv", frame


@pytest.fixture(scope="module")
def drafted(loans_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("configs") / "loans.yaml"
    result = write_draft(loans_csv[0], out)
    return result, out, yaml.safe_load(out.read_text())


def test_the_time_column_is_the_earliest_column_of_dates(drafted):
    result, _, params = drafted
    assert params["data"]["csv"]["time_column"] == "issue_d"
    assert "last_pymnt_d" in result.left_out and "second column of dates" in result.left_out["last_pymnt_d"]


def test_the_target_is_the_two_label_status_with_the_event_as_1(drafted, loans_csv):
    _, _, params = drafted
    csv = params["data"]["csv"]
    assert (csv["target_column"], csv["positive"]) == ("loan_status", "Charged Off")
    assert params["data"]["target"] == "charged_off"
    settings = load_settings(drafted[1])
    table = load_source(settings)
    frame = loans_csv[1]
    inside = pd.to_datetime(frame["issue_d"]) < pd.Timestamp(params["data"]["window"]["end"])
    assert table["target"].sum() == (frame.loc[inside, "loan_status"] == "Charged Off").sum()


def test_identifiers_free_text_constants_and_numbers_in_text_are_left_out_with_the_reason(drafted):
    left_out = drafted[0].left_out
    assert "identifier" in left_out["loan_id"] and "identifier" in left_out["member_id"]
    assert "free text" in left_out["desc"] and "free text" in left_out["emp_title"]
    assert "one value only" in left_out["policy_code"]
    assert "numbers written with text" in left_out["int_rate"]
    features = drafted[2]["features"]
    for name in left_out:
        assert name not in features["categorical"] and name not in features["numeric"]


def test_kinds_bounds_and_required_flags_come_from_the_values(drafted, loans_csv):
    features, frame = drafted[2]["features"], loans_csv[1]
    assert {"grade", "home_ownership", "purpose", "emp_length"} <= set(features["categorical"])
    assert {"loan_amnt", "dti", "revol_util", *(f"bureau_{i:02d}" for i in range(1, EXTRA_NUMBERS + 1))} <= set(
        features["numeric"]
    )
    for name, spec in features["numeric"].items():
        values = frame[name].dropna()
        assert spec["min"] <= values.min() and values.max() <= spec["max"], name
        assert spec["required"] == (not frame[name].isna().any()), name
        assert spec.get("integer", False) == bool((values % 1 == 0).all()), name
    for name, spec in features["categorical"].items():
        assert spec["required"] == (not frame[name].isna().any()), name
    assert features["categorical"]["emp_length"]["required"] is False
    # mostly empty in every month: its own missing limit above the observed share
    assert features["numeric"]["mths_since_last_delinq"]["max_missing"] > frame["mths_since_last_delinq"].isna().mean()


def test_the_drafted_file_passes_the_pipelines_quality_checks_on_its_csv(drafted):
    result, out, params = drafted
    assert result.problems == []
    settings = load_settings(out)
    assert settings.model.name == "loans" and settings.data.source == "csv"
    assert str(settings.paths.model_dir).endswith("artifacts/loans/model")
    assert settings.data.window.start <= settings.data.split.valid_start < settings.data.split.test_start


def test_every_choice_carries_a_comment(drafted):
    text = drafted[1].read_text()
    for line in text.splitlines():
        if line.startswith("    ") and ": {" in line:
            assert "  # " in line, line
    assert "# Left out" in text and "loan_id: looks like an identifier" in text


def refused(tmp_path, frame: pd.DataFrame, *options: str) -> str:
    frame.to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "drafted.yaml"
    return_code = main(["--csv", str(tmp_path / "data.csv"), "--out", str(out), *options])
    assert return_code == 2 and not out.exists()
    return out


def small(rows: int = 2000, every: str = "6h") -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "when": pd.date_range("2023-01-01", periods=rows, freq=every).strftime("%Y-%m-%d %H:%M"),
            "grade": rng.choice(list("ABCDEFG"), rows),
            "size": rng.normal(10, 2, rows),
            "churned": rng.integers(0, 2, rows),
        }
    )


def test_a_csv_without_a_time_column_is_refused_with_the_fix(tmp_path, capsys):
    refused(tmp_path, small().drop(columns="when"))
    error = capsys.readouterr().err
    assert "no time column found" in error and "--time-column" in error


def test_a_target_that_is_not_binary_is_refused_naming_its_values(tmp_path, capsys):
    refused(tmp_path, small(), "--target-column", "grade")
    error = capsys.readouterr().err
    assert "target column grade is not binary: it holds 7 distinct values" in error


def test_a_csv_without_any_two_valued_column_is_refused(tmp_path, capsys):
    refused(tmp_path, small().drop(columns="churned"))
    assert "no target column found" in capsys.readouterr().err


def test_a_named_time_column_that_holds_no_times_is_refused(tmp_path, capsys):
    refused(tmp_path, small(), "--time-column", "grade")
    assert "--time-column grade: 0% of its values read as dates or times" in capsys.readouterr().err


def test_an_existing_file_is_kept_unless_forced(tmp_path, capsys):
    small().to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "mine.yaml"
    out.write_text("# edited by hand\n")
    assert main(["--csv", str(tmp_path / "data.csv"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "# edited by hand\n"
    assert main(["--csv", str(tmp_path / "data.csv"), "--out", str(out), "--force"]) == 0
    assert yaml.safe_load(out.read_text())["data"]["csv"]["target_column"] == "churned"


def test_too_few_rows_per_batch_for_the_quality_checks_is_refused(tmp_path, capsys):
    refused(tmp_path, small(400, "D"))
    error = capsys.readouterr().err
    assert "400 rows with a time in when: too few for the quality checks" in error
    assert "quality.min_rows = 100" in error


def test_a_positive_label_the_target_column_lacks_is_refused_by_the_source(drafted, tmp_path):
    settings = load_settings(drafted[1])
    wrong = settings.with_overrides({"data": {"csv": {"positive": "Defaulted"}}})
    with pytest.raises(ValueError, match="target column 'loan_status' must hold two values, one of them 'Defaulted'"):
        load_source(wrong)


def test_a_name_that_would_mix_its_outputs_with_the_default_ones_is_refused(tmp_path, capsys):
    refused(tmp_path, small(), "--name", "model")
    assert "name 'model' is also a folder of the default pipeline's outputs" in capsys.readouterr().err
