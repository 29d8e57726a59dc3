"""Offline batch inference with the same model.pt that TorchServe serves.

    python -m model.artifact.predict --input_path flights.csv --output_path scored.parquet

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
from model.artifact.export import SCHEMA, TORCHSCRIPT
from model.artifact.tables import read_table, write_table
from model.config import load_settings
from model.training.inputs import model_inputs

log = logging.getLogger(__name__)


def load_served_model(export_dir: Path) -> tuple[torch.jit.ScriptModule, dict]:
    model = torch.jit.load(str(Path(export_dir) / TORCHSCRIPT)).eval()
    schema = json.loads((Path(export_dir) / SCHEMA).read_text())
    return model, schema


def exported_threshold(export_dir: Path) -> float:
    """The decision threshold the exported model answers with (schema.json); training chose it."""
    return float(json.loads((Path(export_dir) / SCHEMA).read_text())["x-model"]["threshold"])


def probability_column(schema: dict) -> str:
    """The name of the probability a model answers with: <target>_probability."""
    return "{}_probability".format(schema["x-model"]["target"])


@torch.no_grad()  # not inference_mode: the same scripted module may also serve autograd (attributions)
def predict_probability(model: torch.nn.Module, schema: dict, frame: pd.DataFrame,
                        chunk_rows: int = 65536) -> np.ndarray:
    """The model's probability for every row of `frame` (columns named as the schema's fields;
    missing ones are missing values), in row order, as float32."""
    facts = schema["x-model"]
    columns = frame.reindex(columns=[*facts["categorical"], *facts["numeric"]])
    probabilities = []
    for start in range(0, len(frame), chunk_rows):
        categorical, numeric = model_inputs(columns.iloc[start:start + chunk_rows], facts["categorical"],
                                            facts["numeric"])
        probabilities.append(model(categorical, numeric))
    return torch.cat(probabilities).numpy() if probabilities else np.empty(0, dtype=np.float32)


def predict_frame(model: torch.nn.Module, schema: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with <target>_probability, <target> (the schema's threshold decides) and model_version."""
    facts = schema["x-model"]
    probability = predict_probability(model, schema, frame)
    return frame.assign(**{probability_column(schema): probability, facts["target"]: probability >= facts["threshold"],
                           "model_version": facts["version"]})


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
