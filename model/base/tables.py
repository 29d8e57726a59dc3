"""Files of request fields in and scored files out: CSV or Parquet, chosen by the suffix.

Python 3.9 compatible: the offline image scores with it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_table(path: Path, as_text: bool = False) -> pd.DataFrame:
    """CSV or Parquet. as_text: every CSV cell as text and ragged lines cut or padded to the
    header, for files from outside that are checked field by field afterwards."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if not as_text:
        return pd.read_csv(path)
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype=str, engine="python", on_bad_lines=lambda fields: fields[: len(header)])


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
