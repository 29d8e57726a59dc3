"""The synthetic source: daily weather at a few stations with a storm-alert target, sensor faults
and an optional warming, written as monthly CSV files into train/ and test/.

    python -m model.data.synthetic --config configs/synthetic.yaml

Each station has its own climate (a temperature offset, a humidity offset, an alert propensity).
Its daily temperature (°C) is a seasonal sine over the year plus AR(1) weather noise whose spread
is `noise`; humidity (%) is higher in winter, pressure (hPa) wanders slowly and drops when the
air is humid. The target is a storm alert, more likely on hot, humid, low-pressure days:
P(alert) = sigmoid(0.45 (temp - 18) + 0.05 (humidity - 65) - 0.1 (pressure - 1013) + station effect).
It is drawn from the true weather, before any sensor fault, so faults blur the signal as they would.

Faults are those of real sensor logs: missing readings (`missing_rate` of each reading) and
anomalies (`anomaly_rate` of each reading): half are spikes, fault codes far outside physical
bounds that cleaning turns into missing values; half are stuck readings, the sensor repeating its
last value, plausible and so left in. From `drift_start` on the climate is `drift_shift` °C warmer:
a real change, so the alerts follow it and a model sees a covariate shift, not a new concept.

Every ingredient draws from its own random stream, so one seed gives the same weather whatever the
fault rates or the drift: a table with faults differs from one without only in the faulty cells.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, SyntheticSource, load_settings
from model.data.sources import TARGET, TIME

log = logging.getLogger(__name__)

STATION = "station"
READINGS = ("temp", "humidity", "pressure")  # what a sensor measures, and so what can fail
COLUMNS = (TIME, TARGET, STATION, "day_of_year", "day_of_week", *READINGS)
FAULT_CODES = (-999.0, 9999.0)  # what a failing logger writes: far outside any physical bound
STREAMS = ("climate", "weather", "alerts", "missing", "anomalies")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    return {name: np.random.default_rng([seed, index]) for index, name in enumerate(STREAMS)}


def _ar1(rng: np.random.Generator, shape: tuple[int, int], spread: float, persistence: float) -> np.ndarray:
    """Day-to-day correlated noise per station, stationary with standard deviation `spread`."""
    shocks = rng.standard_normal(shape) * spread
    noise = np.empty(shape)
    noise[0] = shocks[0]
    innovation = np.sqrt(1 - persistence**2)
    for day in range(1, shape[0]):
        noise[day] = persistence * noise[day - 1] + innovation * shocks[day]
    return noise


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def true_weather(source: SyntheticSource, seed: int) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray], np.ndarray]:
    """Days, the fault-free readings as (days, stations) arrays, and the alerts drawn from them."""
    rng = _streams(seed)
    days = pd.date_range(source.start, periods=source.days, freq="D")
    shape = (source.days, source.stations)
    temp_offset = rng["climate"].normal(0, 2.5, source.stations)
    humidity_offset = rng["climate"].normal(0, 4, source.stations)
    alert_propensity = rng["climate"].normal(0, 0.5, source.stations)

    # The sine peaks in late July; the warming applies from drift_start on.
    season = np.sin(2 * np.pi * (days.day_of_year.to_numpy() - 110) / 365.25)[:, None]
    warming = np.zeros((source.days, 1))
    if source.drift_start is not None:
        warming[days >= pd.Timestamp(source.drift_start)] = source.drift_shift
    temp = 11 + temp_offset + 11 * season + _ar1(rng["weather"], shape, source.noise, 0.75) + warming
    humidity = np.clip(65 + humidity_offset - 10 * season + rng["weather"].normal(0, 8, shape), 5, 100)
    pressure = 1013 + _ar1(rng["weather"], shape, 7, 0.8) - 0.15 * (humidity - 65)

    logit = 0.45 * (temp - 18) + 0.05 * (humidity - 65) - 0.1 * (pressure - 1013) + alert_propensity
    alerts = (rng["alerts"].random(shape) < _sigmoid(logit)).astype("int8")
    return days, {"temp": temp, "humidity": humidity, "pressure": pressure}, alerts


def with_faults(readings: dict[str, np.ndarray], source: SyntheticSource, seed: int) -> dict[str, np.ndarray]:
    """Readings as a logger records them: rounded, some stuck, some fault codes, some missing."""
    rng = _streams(seed)
    logged = {}
    for name, values in readings.items():
        # Uniform draws compared with the rates (never rate-dependent draws): a higher rate
        # adds faulty cells without moving the others.
        anomalous = rng["anomalies"].random(values.shape) < source.anomaly_rate
        spike = rng["anomalies"].random(values.shape) < 0.5
        code = rng["anomalies"].choice(FAULT_CODES, values.shape)
        missing = rng["missing"].random(values.shape) < source.missing_rate

        recorded = np.round(values, 1)
        stuck = anomalous & ~spike
        # A stuck sensor repeats its station's previous recorded value (the first day has none to repeat).
        held = pd.DataFrame(np.where(stuck, np.nan, recorded)).ffill().to_numpy()
        recorded = np.where(stuck & ~np.isnan(held), held, recorded)
        recorded = np.where(anomalous & spike, code, recorded)
        logged[name] = np.where(missing, np.nan, recorded)
    return logged


def generate(source: SyntheticSource, seed: int) -> pd.DataFrame:
    """The whole synthetic table, one row per day and station, in time then station order."""
    days, readings, alerts = true_weather(source, seed)
    logged = with_faults(readings, source, seed)
    stations = [f"S{i + 1}" for i in range(source.stations)]
    rows = source.days * source.stations
    table = pd.DataFrame(
        {
            TIME: np.repeat(days.to_numpy(), source.stations),
            TARGET: alerts.reshape(rows),
            STATION: np.tile(stations, source.days),
            "day_of_year": np.repeat(days.day_of_year.to_numpy(), source.stations),
            "day_of_week": np.repeat(days.day_of_week.to_numpy(), source.stations),
            **{name: values.reshape(rows) for name, values in logged.items()},
        }
    )
    return table[list(COLUMNS)]


def write_synthetic(settings: Settings) -> list[Path]:
    """Generate the configured table and write one CSV per month: days before test_start into
    train/, the rest into test/. Earlier CSVs there are removed, so a shorter run leaves no
    stale months behind for the reader to pick up."""
    source = settings.data.synthetic
    if source is None:
        raise ValueError(
            "data.synthetic is not set: add a data.synthetic section to the params file "
            "(configs/synthetic.yaml has one)"
        )
    table = generate(source, settings.seed)
    in_test = table[TIME] >= pd.Timestamp(source.test_start)
    written = []
    for part, rows in (("train", table[~in_test]), ("test", table[in_test])):
        folder = source.dir / part
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.csv"):
            old.unlink()
        for month, frame in rows.groupby(rows[TIME].dt.to_period("M"), sort=True):
            path = folder / f"{month}.csv"
            frame.to_csv(path, index=False, date_format="%Y-%m-%d")
            written.append(path)
        log.info(
            "%s: %d rows, %d days in %d monthly files under %s",
            part,
            len(rows),
            rows[TIME].nunique(),
            rows[TIME].dt.to_period("M").nunique(),
            folder,
        )
    readings = table[list(READINGS)]
    log.info(
        "%d stations, %s to %s: %.1f%% alerts, %.2f%% readings missing, %d fault codes",
        source.stations,
        table[TIME].min().date(),
        table[TIME].max().date(),
        100 * table[TARGET].mean(),
        100 * readings.isna().to_numpy().mean(),
        int(readings.isin(FAULT_CODES).to_numpy().sum()),
    )
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file with a data.synthetic section")
    args = parser.parse_args()
    configure_logging()
    write_synthetic(load_settings(args.config))


if __name__ == "__main__":
    main()
