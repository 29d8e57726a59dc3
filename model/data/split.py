"""The time split: which rows train the model, which choose its epoch and threshold
(valid), and which are held out to score it (test). Every module selects rows through here."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.config import Settings

SPLIT = "split"


SPLITS = ("train", "valid", "test")


def assign_split(times: pd.Series, settings: Settings) -> pd.Series:
    split = settings.data.split
    labels = np.select([times < split.valid_start, times < split.test_start], ["train", "valid"], "test")
    return pd.Series(labels, index=times.index, dtype="string")


def split_rows(table: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The rows of the named splits (one or more of SPLITS), in table order."""
    unknown = set(names) - set(SPLITS)
    if unknown or not names:
        raise ValueError(f"split names must be among {SPLITS}, got {names}")
    return table[table[SPLIT].isin(names)] if len(names) > 1 else table[table[SPLIT] == names[0]]


def split_frames(table: pd.DataFrame, names: tuple[str, ...] = SPLITS) -> dict[str, pd.DataFrame]:
    """Each split's rows, by name."""
    return {name: split_rows(table, name) for name in names}
