"""Prepare the modelling table: the configured source, quality-checked and cleaned, split by time.

python -m model.data.prepare --config params.yaml --step ingest     # the raw table (DVC stage prepare)
python -m model.data.prepare --config params.yaml --step validate   # checked, cleaned, split (stage validate)
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.quality import assess
from model.data.sources import TARGET, TIME, load_source
from model.data.split import SPLIT, assign_split

log = logging.getLogger(__name__)


def build_table(settings: Settings, flight_tables: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Source -> quality check and cleaning -> time split."""
    table = assess(load_source(settings, flight_tables), settings)
    table[SPLIT] = assign_split(table[TIME], settings)
    return table


def load_table(settings: Settings) -> pd.DataFrame:
    """The prepared table: read from disk when `validate` has written it, else built."""
    if settings.paths.processed.exists():
        return pd.read_parquet(settings.paths.processed)
    return build_table(settings)


def ingest(settings: Settings) -> pd.DataFrame:
    """The `prepare` stage: the source's table as read (the raw data DVC tracks)."""
    raw = load_source(settings)
    settings.paths.raw.parent.mkdir(parents=True, exist_ok=True)
    raw.to_parquet(settings.paths.raw, index=False)
    log.info("wrote %d rows from the %s source to %s", len(raw), settings.data.source, settings.paths.raw)
    return raw


def validate(settings: Settings) -> pd.DataFrame:
    """The `validate` stage: quality checks and cleaning of the raw table, then the time split."""
    table = assess(pd.read_parquet(settings.paths.raw), settings)
    table[SPLIT] = assign_split(table[TIME], settings)
    settings.paths.processed.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(settings.paths.processed, index=False)
    counts = table.groupby(SPLIT, observed=True)[TARGET].agg(["size", "mean"])
    for split_name, row in counts.iterrows():
        log.info("%s: %d rows, %.1f%% positive (%s)", split_name, row["size"], 100 * row["mean"], settings.data.target)
    log.info("wrote %s", settings.paths.processed)
    return table


def prepare(settings: Settings) -> pd.DataFrame:
    """Both stages: raw table, then the validated and split one."""
    ingest(settings)
    return validate(settings)


STEPS = {"ingest": ingest, "validate": validate, "all": prepare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument(
        "--step",
        choices=STEPS,
        default="all",
        help="ingest: source -> paths.raw; validate: paths.raw -> paths.processed; all: both",
    )
    args = parser.parse_args()
    configure_logging()
    STEPS[args.step](load_settings(args.config))


if __name__ == "__main__":
    main()
