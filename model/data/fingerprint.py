"""Content hashes that name the data a model came from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd


def file_hash(path: Path) -> str:
    """The MD5 DVC records for a file output (dvc.lock), so a record names the data it came from."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows_hash(rows: pd.DataFrame) -> str:
    """MD5 of the rows' content (pandas' per-row hashes, in order): the data a version was trained on."""
    return hashlib.md5(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()
