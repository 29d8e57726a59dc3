"""Prepare the modelling table: the configured source, quality-checked and cleaned, split by time.

    python -m model.data --config params.yaml
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.quality import assess
from model.sources import TARGET, TIME, load_source

log = logging.getLogger(__name__)

SPLIT = "split"
SPLITS = ("train", "valid", "test")


def assign_split(times: pd.Series, settings: Settings) -> pd.Series:
    split = settings.data.split
    labels = np.select([times < split.valid_start, times < split.test_start], ["train", "valid"], "test")
    return pd.Series(labels, index=times.index, dtype="string")


def build_table(settings: Settings, flight_tables: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Source -> quality check and cleaning -> time split."""
    table = assess(load_source(settings, flight_tables), settings)
    table[SPLIT] = assign_split(table[TIME], settings)
    return table


def load_table(settings: Settings) -> pd.DataFrame:
    """The prepared table: read from disk when `prepare` has written it, else built."""
    if settings.paths.processed.exists():
        return pd.read_parquet(settings.paths.processed)
    return build_table(settings)


def prepare(settings: Settings) -> pd.DataFrame:
    table = build_table(settings)
    settings.paths.processed.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(settings.paths.processed, index=False)
    counts = table.groupby(SPLIT, observed=True)[TARGET].agg(["size", "mean"])
    for split_name, row in counts.iterrows():
        log.info("%s: %d rows, %.1f%% positive (%s)", split_name, row["size"], 100 * row["mean"],
                 settings.data.target)
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
