"""Offline batch inference with the same model.pt that TorchServe serves.

    python -m model.predict --input_path flights.csv --output_path scored.parquet

Reads CSV or Parquet with the request fields as columns (missing columns or
cells are missing values), writes the input with <target>_probability, <target>
(e.g. late_probability, late) and model_version added.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model import configure_logging
from model.config import load_settings
from model.export import SCHEMA, TORCHSCRIPT
from model.features import model_inputs

log = logging.getLogger(__name__)


def load_served_model(export_dir: Path) -> tuple[torch.jit.ScriptModule, dict]:
    model = torch.jit.load(str(Path(export_dir) / TORCHSCRIPT)).eval()
    schema = json.loads((Path(export_dir) / SCHEMA).read_text())
    return model, schema


@torch.no_grad()  # not inference_mode: the same scripted module may also serve autograd (attributions)
def predict_frame(model: torch.jit.ScriptModule, schema: dict, frame: pd.DataFrame,
                  chunk_rows: int = 65536) -> pd.DataFrame:
    facts = schema["x-model"]
    columns = frame.reindex(columns=[*facts["categorical"], *facts["numeric"]])
    probabilities = []
    for start in range(0, len(frame), chunk_rows):
        categorical, numeric = model_inputs(columns.iloc[start:start + chunk_rows], facts["categorical"],
                                            facts["numeric"])
        probabilities.append(model(categorical, numeric))
    probability = torch.cat(probabilities).numpy() if probabilities else np.empty(0, dtype=np.float32)
    target = facts["target"]
    return frame.assign(**{f"{target}_probability": probability, target: probability >= facts["threshold"],
                           "model_version": facts["version"]})


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_path", required=True, type=Path, help="CSV or Parquet with the request fields")
    parser.add_argument("--output_path", required=True, type=Path, help=".csv or .parquet")
    parser.add_argument("--export_dir", type=Path, default=None, help="model.pt + schema.json (default: params.yaml)")
    args = parser.parse_args()
    configure_logging()
    model, schema = load_served_model(args.export_dir or load_settings().paths.export_dir)
    scored = predict_frame(model, schema, read_table(args.input_path))
    write_table(scored, args.output_path)
    log.info("scored %d rows with %s version %s into %s", len(scored), schema["x-model"]["name"],
             schema["x-model"]["version"], args.output_path)
    print(args.output_path)


if __name__ == "__main__":
    main()
