"""Fit the preprocessing constants model.pt carries (vocabularies, imputation, scaling) on the
training rows only; the network applies them (model/training/network.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from model.config import Features
from model.training.network import MISSING, MISSING_VALUE, UNKNOWN


def fit_preprocessing(
    train: pd.DataFrame, features: Features, min_category_count: int, missing: str = "median_indicator"
) -> dict[str, Any]:
    """Vocabularies, imputation and scaling constants, from the training rows only.
    missing: "median_indicator" fills with the median (the network adds indicators),
    "constant" fills with the mean, which standardizes to 0."""
    vocabularies = []
    for name in features.categorical:
        counts = train[name].value_counts()
        frequent = [str(c) for c, n in counts.items() if n >= min_category_count and c != MISSING_VALUE]
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
