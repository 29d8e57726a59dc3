"""A table's rows as model.pt takes them: one list of strings per categorical column ("" when
missing) and one float32 tensor of the numbers (NaN when missing). Training, offline scoring
and interpretation all feed the network through here.

Python 3.9 compatible: the offline image scores with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.training.network import MISSING_VALUE


def model_inputs(
    frame: pd.DataFrame, categorical: list[str], numeric: list[str]
) -> tuple[list[list[str]], torch.Tensor]:
    """Columns as model.pt takes them: strings ("" when missing) and float32 with NaN."""
    columns = [frame[name].astype("string").fillna(MISSING_VALUE).tolist() for name in categorical]
    values = frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    return columns, torch.from_numpy(values.reshape(len(frame), len(numeric)).copy())
