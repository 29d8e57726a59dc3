"""The network's inputs for scikit-learn models (the baselines and the linear reference), so
every model is compared on the same facts."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from model.config import Settings


def _sine_cosine(values: np.ndarray, periods: list[float]) -> np.ndarray:
    angle = 2 * np.pi * np.asarray(values, dtype=np.float64) / np.asarray(periods, dtype=np.float64)
    return np.hstack([np.sin(angle), np.cos(angle)])


def _sine_cosine_names(transformer: FunctionTransformer, names: list[str]) -> list[str]:
    return [f"{name}_sin" for name in names] + [f"{name}_cos" for name in names]


def tabular_features(
    settings: Settings, categories: Literal["one_hot", "ordinal"] = "one_hot", scale: bool = True
) -> ColumnTransformer:
    """The MLP's inputs, for scikit-learn models, so every model sees the same facts.

    Categories rarer than `min_category_count` share one level and unseen ones are
    ignored (one-hot) or missing (ordinal codes, for trees that split on categories
    natively). Numbers are median-imputed with a missing indicator each and, with
    `scale`, standardized: distances and penalties need it, trees do not, and their
    splits read in real units without it. Periodic numbers (the month) become sine and
    cosine, so December sits next to January as in the network, instead of beyond
    September where no model trained on January-September has seen it.
    Categorical columns come first, in config order.
    """
    features = settings.features
    if categories == "one_hot":
        encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=settings.model.min_category_count)
    else:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=settings.model.min_category_count
        )
    periods = {name: spec.period for name, spec in features.numeric.items() if spec.period}
    plain = [name for name in features.numeric if name not in periods]
    imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    columns = [
        ("categorical", encoder, list(features.categorical)),
        ("numeric", make_pipeline(imputer, StandardScaler()) if scale else imputer, plain),
    ]
    if periods:
        cyclic = FunctionTransformer(
            _sine_cosine, kw_args={"periods": list(periods.values())}, feature_names_out=_sine_cosine_names
        )
        columns.append(
            (
                "periodic",
                make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), cyclic),
                list(periods),
            )
        )
    return ColumnTransformer(columns)


def logistic_regression(settings: Settings) -> Pipeline:
    """The linear reference, on the same features as the MLP."""
    return make_pipeline(tabular_features(settings), LogisticRegression(max_iter=2000))
