"""The declared schema of a cleaned table, built from the feature contract (pandera)."""

from __future__ import annotations

import pandera.pandas as pa

from model.config import Settings
from model.data.sources import TARGET, TIME


def table_schema(settings: Settings) -> pa.DataFrameSchema:
    """What a cleaned table must look like: the feature contract as a pandera schema."""
    columns: dict[str, pa.Column] = {TIME: pa.Column(pa.DateTime, nullable=False, coerce=True)}
    for name, feature in settings.features.categorical.items():
        checks = [pa.Check.str_length(min_value=1)] if feature.required else []
        columns[name] = pa.Column(str, checks=checks, nullable=False, coerce=True)
    for name, spec in settings.features.numeric.items():
        checks = [pa.Check.in_range(spec.min, spec.max)]
        if spec.integer:
            checks.append(pa.Check(lambda values: values.dropna() % 1 == 0, element_wise=False, name="integer"))
        columns[name] = pa.Column(float, checks=checks, nullable=not spec.required, coerce=True)
    columns[TARGET] = pa.Column("int8", pa.Check.isin([0, 1]), nullable=False, coerce=True)
    return pa.DataFrameSchema(columns, strict="filter", ordered=False)
