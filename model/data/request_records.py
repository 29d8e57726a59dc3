"""Table rows as the JSON records a client sends to the prediction API."""

from __future__ import annotations

from typing import Any

import pandas as pd

from model.config import Features


def request_records(frame: pd.DataFrame, features: Features) -> list[dict[str, Any]]:
    """Rows as JSON request records: missing values left out, integer fields as integers."""
    records = []
    for row in frame[features.names].to_dict("records"):
        record: dict[str, Any] = {}
        for name in features.categorical:
            if row[name] not in ("", None) and not pd.isna(row[name]):
                record[name] = str(row[name])
        for name, spec in features.numeric.items():
            if not pd.isna(row[name]):
                record[name] = int(row[name]) if spec.integer else float(row[name])
        records.append(record)
    return records
