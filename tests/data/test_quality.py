"""Quality checks: the declared schema, metrics kept over time, cleaning, and the stop."""

import pandas as pd
import pandera.pandas as pa
import pytest

from model.data.quality import DataQualityError, assess, clean, measure, problems
from model.data.quality_history import history
from model.data.schema import table_schema
from model.data.sources import TIME


def test_the_prepared_table_obeys_the_declared_schema(table, settings):
    table_schema(settings).validate(table, lazy=True)


def test_the_schema_refuses_out_of_bounds_missing_required_and_bad_target(table, settings):
    broken = table.head(50).copy()
    broken.loc[0, "month"] = 13.0
    broken.loc[1, "distance"] = None
    broken.loc[2, "carrier"] = ""
    broken.loc[3, "target"] = 2
    with pytest.raises(pa.errors.SchemaErrors) as failure:
        table_schema(settings).validate(broken, lazy=True)
    assert {"month", "distance", "carrier", "target"} <= set(failure.value.failure_cases["column"])


@pytest.fixture
def raw(table):
    """A raw-looking slice of January: categories may be missing (NaN), numbers unbounded."""
    part = table[table[TIME] < "2013-02-01"].drop(columns="split").head(3000).copy()
    part["manufacturer"] = part["manufacturer"].replace("", None)
    return part


def test_metrics_cover_every_batch_and_column(raw, settings):
    metrics = measure(raw, settings, reference=raw)
    assert set(metrics["column"]) == set(settings.features.names)
    assert set(metrics["batch"]) == {"2013-01"}
    manufacturer = metrics[metrics["column"] == "manufacturer"].iloc[0]
    assert manufacturer["missing_share"] == pytest.approx(raw["manufacturer"].isna().mean())
    assert manufacturer["new_categories"] == 0


def test_new_categories_and_out_of_range_shares_are_counted(raw, settings):
    batch = raw.copy()
    batch.loc[batch.index[:30], "carrier"] = "ZZ"
    batch.loc[batch.index[:60], "wind_speed"] = 900.0
    metrics = measure(batch, settings, reference=raw).set_index("column")
    assert metrics.loc["carrier", "new_categories"] == 1
    assert metrics.loc["wind_speed", "out_of_range_share"] == pytest.approx(60 / len(batch))


def test_a_batch_over_a_limit_stops_the_pipeline_and_is_recorded(raw, settings, tmp_path):
    strict = settings.with_overrides(
        {"paths": {"quality_db": tmp_path / "q.sqlite", "quality": tmp_path / "q.parquet"}}
    )
    batch = raw.copy()
    batch.loc[batch.index[: len(batch) // 2 + 10], "temp"] = None
    with pytest.raises(DataQualityError, match=r"batch 2013-01: temp is 5\d\.\d% missing, over the limit of 50%"):
        assess(batch, strict, reference=raw)
    recorded = history(tmp_path / "q.sqlite")
    assert not recorded["passed"].astype(bool).any()
    assess(raw, strict, reference=raw)
    assert history(tmp_path / "q.sqlite")["measured_at"].nunique() == 2  # kept over time


def test_feature_specific_missing_limits_apply(raw, settings):
    metrics = measure(raw.assign(wind_gust=None), settings, reference=raw)
    assert any("wind_gust" in p and "95%" in p for p in problems(metrics, settings))


@pytest.mark.parametrize(("action", "rows", "value"), [("missing", 3, None), ("clip", 3, 250.0), ("drop", 2, None)])
def test_out_of_range_values_are_cleaned_as_configured(settings, raw, action, rows, value):
    batch = raw.head(3).copy()
    batch.loc[batch.index[0], "wind_speed"] = 1048.0
    cleaned = clean(batch, settings.with_overrides({"quality": {"out_of_range": action}}))
    assert len(cleaned) == rows
    if action != "drop":
        first = cleaned.loc[0, "wind_speed"]
        assert (pd.isna(first) and value is None) or first == value


def test_duplicates_are_dropped_only_when_configured(settings, raw):
    batch = pd.concat([raw.head(5), raw.head(2)], ignore_index=True)
    assert len(clean(batch, settings)) == 7  # flights: identical rows can be distinct flights
    assert len(clean(batch, settings.with_overrides({"quality": {"drop_duplicates": True}}))) == 5
    assert measure(batch, settings, reference=raw)["duplicate_share"].iloc[0] == pytest.approx(2 / 7)
