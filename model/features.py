"""Fit the preprocessing constants that model.pt carries, and turn a table into its inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from model.config import Features
from model.network import MISSING, MISSING_VALUE, UNKNOWN


def fit_preprocessing(train: pd.DataFrame, features: Features, min_category_count: int,
                      missing: str = "median_indicator") -> dict[str, Any]:
    """Vocabularies, imputation and scaling constants, from the training rows only.
    missing: "median_indicator" fills with the median (the network adds indicators),
    "constant" fills with the mean, which standardizes to 0."""
    vocabularies = []
    for name in features.categorical:
        counts = train[name].value_counts()
        frequent = [c for c, n in counts.items() if n >= min_category_count and c != MISSING_VALUE]
        vocabulary = {MISSING_VALUE: MISSING}
        vocabulary.update({category: index for index, category in enumerate(frequent, start=MISSING + 1)})
        assert UNKNOWN not in vocabulary.values()
        vocabularies.append(vocabulary)

    fill, mean, std = [], [], []
    for name in features.numeric:
        values = train[name].astype("float64")
        present = values.notna().any()
        center = float(values.median() if missing == "median_indicator" else values.mean()) if present else 0.0
        filled = values.fillna(center)
        spread = float(filled.std())
        fill.append(center)
        mean.append(float(filled.mean()))
        std.append(spread if np.isfinite(spread) and spread > 0 else 1.0)
    return {
        "categorical": list(features.categorical),
        "numeric": list(features.numeric),
        "vocabularies": vocabularies,
        "numeric_fill": fill,
        "numeric_mean": mean,
        "numeric_std": std,
        "periods": [spec.period or 0.0 for spec in features.numeric.values()],
        "missing": missing,
    }


def model_inputs(frame: pd.DataFrame, categorical: list[str],
                 numeric: list[str]) -> tuple[list[list[str]], torch.Tensor]:
    """Columns as model.pt takes them: strings ("" when missing) and float32 with NaN."""
    columns = [frame[name].astype("string").fillna(MISSING_VALUE).tolist() for name in categorical]
    values = frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    return columns, torch.from_numpy(values.reshape(len(frame), len(numeric)).copy())


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
