"""Offline batch inference with the model TorchServe serves: model.pt, or the same model as
model.onnx in ONNX Runtime (no torch needed).

    python -m model.artifact.predict --input_path flights.csv --output_path scored.parquet
    python -m model.artifact.predict --input_path flights.csv --output_path scored.parquet --runtime onnx

Reads CSV or Parquet with the request fields as columns (missing columns or
cells are missing values), writes the input with <target>_probability, <target>
(e.g. late_probability, late) and model_version added. score_table is the one path from a
file to a scored file: this command's, and `run.py --mode inference`'s, which adds checks
of every cell (coerce_features) with the registry's production version.

torch is imported only by the TorchScript path: `--runtime onnx` scores in a process that
never loads it (onnxruntime, numpy and pandas only).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, overload

import numpy as np
import pandas as pd

from model import configure_logging
from model.base.tables import read_table, write_table
from model.config import Features, load_settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ONNX_MODEL = "model.onnx"  # written by model/artifact/onnx_export.py beside model.pt
ONNX_SCHEMA = "schema.json"  # the metadata entry of model.onnx that holds schema.json
RUNTIMES = ("torchscript", "onnx")
MISSING_CATEGORY = ""  # what both models take for a missing category
PREDICT, ISSUES = "predict", "input_issues"  # the checked scoring's decision (0/1) and what it coerced


class OnnxModel:
    """model.onnx in an ONNX Runtime session: one input per request field, the schema from the
    model's own metadata. The same answers as model.pt (within 1e-6) without torch."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.schema: dict = json.loads(self.session.get_modelmeta().custom_metadata_map[ONNX_SCHEMA])
        facts = self.schema["x-model"]
        self.categorical: list[str] = facts["categorical"]
        self.numeric: list[str] = facts["numeric"]
        self.output = "{}_probability".format(facts["target"])

    def inputs(self, categorical: list[list[str]], numeric: np.ndarray) -> dict[str, np.ndarray]:
        """The feed from model.pt's two inputs: category columns and a [rows, fields] number table."""
        feed = {name: np.asarray(column, dtype=object) for name, column in zip(self.categorical, categorical)}
        numbers = np.asarray(numeric, dtype=np.float64).reshape(-1, len(self.numeric))
        feed.update({name: np.ascontiguousarray(numbers[:, j]) for j, name in enumerate(self.numeric)})
        return feed

    def __call__(self, categorical: list[list[str]], numeric: Any) -> np.ndarray:
        """Probabilities (float64) from model.pt's two inputs, so the handler's service can call it."""
        return self.session.run([self.output], self.inputs(categorical, numeric))[0]

    def frame_inputs(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        feed = {
            name: frame[name].astype("string").fillna(MISSING_CATEGORY).to_numpy(dtype=object)
            for name in self.categorical
        }
        feed.update(
            {
                name: pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                for name in self.numeric
            }
        )
        return feed

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return self.session.run([self.output], self.frame_inputs(frame))[0]


ServedModel = Union["torch.jit.ScriptModule", OnnxModel]


@overload
def load_served_model(
    export_dir: Path, runtime: Literal["torchscript"] = ...
) -> tuple[torch.jit.ScriptModule, dict]: ...
@overload
def load_served_model(export_dir: Path, runtime: str) -> tuple[ServedModel, dict]: ...
def load_served_model(export_dir: Path, runtime: str = "torchscript") -> tuple[ServedModel, dict]:
    """The exported model and its schema: model.pt (torch.jit) or model.onnx (ONNX Runtime)."""
    if runtime == "onnx":
        model = OnnxModel(Path(export_dir) / ONNX_MODEL)
        return model, model.schema
    if runtime != "torchscript":
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    import torch

    from model.artifact.export import SCHEMA, TORCHSCRIPT

    model = torch.jit.load(str(Path(export_dir) / TORCHSCRIPT)).eval()
    schema = json.loads((Path(export_dir) / SCHEMA).read_text())
    return model, schema


def exported_threshold(export_dir: Path) -> float:
    """The decision threshold the exported model answers with (schema.json); training chose it."""
    from model.artifact.export import SCHEMA

    return float(json.loads((Path(export_dir) / SCHEMA).read_text())["x-model"]["threshold"])


def probability_column(schema: dict) -> str:
    """The name of the probability a model answers with: <target>_probability."""
    return "{}_probability".format(schema["x-model"]["target"])


def predict_probability(model: ServedModel, schema: dict, frame: pd.DataFrame, chunk_rows: int = 65536) -> np.ndarray:
    """The model's probability for every row of `frame` (columns named as the schema's fields;
    missing ones are missing values), in row order, as float32."""
    facts = schema["x-model"]
    columns = frame.reindex(columns=[*facts["categorical"], *facts["numeric"]])
    if isinstance(model, OnnxModel):
        chunks = [
            model.probability(columns.iloc[start : start + chunk_rows]) for start in range(0, len(frame), chunk_rows)
        ]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.empty(0, dtype=np.float32)
    import torch

    from model.training.inputs import model_inputs

    probabilities = []
    # not inference_mode: the same scripted module may also serve autograd (attributions)
    with torch.no_grad():
        for start in range(0, len(frame), chunk_rows):
            categorical, numeric = model_inputs(
                columns.iloc[start : start + chunk_rows], facts["categorical"], facts["numeric"]
            )
            probabilities.append(model(categorical, numeric))
    # detach: once a scripted module has also run under autograd (attributions), TorchScript's
    # profiling executor can hand back outputs that require grad even under no_grad
    return torch.cat(probabilities).detach().numpy() if probabilities else np.empty(0, dtype=np.float32)


def predict_frame(model: ServedModel, schema: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with <target>_probability, <target> (the schema's threshold decides) and model_version."""
    facts = schema["x-model"]
    probability = predict_probability(model, schema, frame)
    return frame.assign(
        **{
            probability_column(schema): probability,
            facts["target"]: probability >= facts["threshold"],
            "model_version": facts["version"],
        }
    )


def coerce_features(
    frame: pd.DataFrame, features: Features, vocabularies: dict[str, set[str]]
) -> tuple[pd.DataFrame, pd.Series]:
    """The feature columns as model.pt takes them, and per row a sentence for everything that was
    not a usable value: a missing column or cell, text in a number, a number outside its bounds
    (all three become missing values, which the model imputes), a category the model does not
    know (it has its own "unknown" embedding). Nothing here refuses a row."""
    columns = pd.DataFrame(index=frame.index)
    issues: list[pd.Series] = []

    def note(mask: pd.Series, text: pd.Series | str) -> None:
        issues.append(pd.Series(np.where(mask, text, ""), index=frame.index, dtype=object))

    for name, feature in features.categorical.items():
        if name not in frame.columns:
            log.warning("input has no column %s: missing in every row", name)
        values: pd.Series = frame.get(name, pd.Series(pd.NA, index=frame.index)).astype("string").str.strip()
        missing = values.isna() | (values == "")
        columns[name] = values.mask(missing, "")
        note(missing & feature.required, f"{name}: missing")
        unseen = ~missing & ~values.isin(vocabularies.get(name, set())).fillna(False)
        note(unseen, name + ": unknown category '" + values.fillna("") + "'")
    for name, spec in features.numeric.items():
        if name not in frame.columns:
            log.warning("input has no column %s: missing in every row", name)
        raw = frame.get(name, pd.Series(pd.NA, index=frame.index))
        text = raw.astype("string").str.strip()
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        not_number = text.notna() & (text != "") & values.isna()
        infinite = values.notna() & ~np.isfinite(values)
        values = values.mask(infinite)
        outside = (values < spec.min) | (values > spec.max)
        columns[name] = values.mask(outside)
        note(not_number | infinite, name + ": '" + text.fillna("") + "' is not a finite number")
        note(outside, name + ": " + values.astype(str) + f" outside [{spec.min:g}, {spec.max:g}]")
        note((text.isna() | (text == "")) & spec.required, f"{name}: missing")
    joined = (
        pd.concat(issues, axis=1).apply(lambda row: "; ".join(part for part in row if part), axis=1)
        if issues and len(frame)
        else pd.Series("", index=frame.index, dtype=object)
    )
    return columns, joined


@dataclass(frozen=True)
class InputChecks:
    """What coerce_features holds a file from outside against: the features' bounds and required
    flags (params.yaml) and the categories the model was trained on (its config.json)."""

    features: Features
    vocabularies: dict[str, set[str]]


def score_table(
    model: ServedModel,
    schema: dict,
    input_path: Path,
    output_path: Path,
    checks: InputChecks | None = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Read a CSV or Parquet file of request fields, score it, write it to `output_path`.

    Without checks: the file as pandas reads it, with predict_frame's columns. With checks (a
    file from outside): every cell read as text and coerced (coerce_features), so every row gets
    an answer; the input's columns as they came, then <target>_probability, `predict` (the 0/1
    decision at the threshold, 1 = <target>), model_version (`model_version`, else the schema's)
    and input_issues (what was coerced in that row, "" when nothing)."""
    if checks is None:
        scored = predict_frame(model, schema, read_table(input_path))
    else:
        frame = read_table(input_path, as_text=True)
        columns, issues = coerce_features(frame, checks.features, checks.vocabularies)
        probability = predict_probability(model, schema, columns)
        scored = frame.assign(
            **{
                probability_column(schema): probability,
                PREDICT: (probability >= schema["x-model"]["threshold"]).astype("int8"),
                "model_version": model_version or schema["x-model"]["version"],
                ISSUES: issues.to_numpy(),
            }
        )
        flagged = int((issues != "").sum())
        if flagged:
            log.warning(
                "%d of %d rows had values that could not be used as given (see the %s column)",
                flagged,
                len(frame),
                ISSUES,
            )
    write_table(scored, output_path)
    return scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_path", required=True, type=Path, help="CSV or Parquet with the request fields")
    parser.add_argument("--output_path", required=True, type=Path, help=".csv or .parquet")
    parser.add_argument(
        "--export_dir", type=Path, default=None, help="model.pt + schema.json, or model.onnx (default: params.yaml)"
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torchscript",
        help="torchscript: model.pt with torch (default); onnx: model.onnx with ONNX Runtime, no torch",
    )
    args = parser.parse_args()
    configure_logging()
    model, schema = load_served_model(args.export_dir or load_settings().paths.export_dir, args.runtime)
    scored = score_table(model, schema, args.input_path, args.output_path)
    log.info(
        "scored %d rows with %s version %s (%s) into %s",
        len(scored),
        schema["x-model"]["name"],
        schema["x-model"]["version"],
        args.runtime,
        args.output_path,
    )
    print(args.output_path)


if __name__ == "__main__":
    main()
