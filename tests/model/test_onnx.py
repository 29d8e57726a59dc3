"""model.onnx: the served model with its preprocessing inside, for ONNX Runtime. It takes the
request fields as they come (strings, numbers with NaN for missing), passes onnx.checker, answers
as model.pt does on every test-month record, and the offline scorer runs it without torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest

from model.artifact.onnx_export import export_onnx
from model.artifact.predict import (
    ISSUES,
    ONNX_MODEL,
    ONNX_SCHEMA,
    PREDICT,
    InputChecks,
    load_served_model,
    predict_frame,
    predict_probability,
    score_table,
)
from model.config import ROOT
from model.data.split import split_rows
from model.training.weights import CONFIG

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def onnx_dir(settings, metrics, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(settings.paths.model_dir, out)
    return out


@pytest.fixture(scope="module")
def onnx_model(onnx_dir):
    return load_served_model(onnx_dir, "onnx")[0]


def test_model_onnx_passes_the_checker_and_takes_the_request_fields(onnx_dir, schema):
    model = onnx.load(str(onnx_dir / ONNX_MODEL))
    onnx.checker.check_model(model, full_check=True)
    facts = schema["x-model"]
    inputs = {tensor.name: tensor.type.tensor_type.elem_type for tensor in model.graph.input}
    assert list(inputs) == facts["categorical"] + facts["numeric"]
    assert {inputs[name] for name in facts["categorical"]} == {onnx.TensorProto.STRING}
    assert {inputs[name] for name in facts["numeric"]} == {onnx.TensorProto.DOUBLE}
    assert [tensor.name for tensor in model.graph.output] == [f"{facts['target']}_probability", facts["target"]]
    # The preprocessing is in the graph: string lookups, missing values, periodic features.
    assert {"LabelEncoder", "IsNaN", "Where", "Sin", "Cos", "Gemm"} <= {node.op_type for node in model.graph.node}
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata["version"] == facts["version"]
    assert json.loads(metadata[ONNX_SCHEMA]) == schema


def test_onnx_runtime_answers_as_torchscript_on_every_test_month_record(table, scripted, schema, onnx_model):
    test = split_rows(table, "test")
    torchscript = predict_probability(scripted, schema, test).astype(np.float64)
    feed = onnx_model.frame_inputs(test.reindex(columns=onnx_model.categorical + onnx_model.numeric))
    probability, late = onnx_model.session.run(None, feed)
    assert len(probability) == len(test) > 1000
    assert np.abs(probability - torchscript).max() <= TOLERANCE
    threshold = schema["x-model"]["threshold"]
    assert np.array_equal(late, probability >= threshold)
    clear = np.abs(torchscript - threshold) > TOLERANCE  # decisions agree wherever a 1e-6 difference cannot flip them
    assert np.array_equal(late[clear], (torchscript >= threshold)[clear])


def test_unknown_categories_and_missing_values_are_handled_inside_the_graph(scripted, schema, onnx_model):
    facts = schema["x-model"]
    example = {name: schema["properties"][name]["examples"][0] for name in facts["categorical"]}
    example.update(
        {
            name: (schema["properties"][name]["minimum"] + schema["properties"][name]["maximum"]) / 2
            for name in facts["numeric"]
        }
    )
    optional = [name for name in facts["categorical"] + facts["numeric"] if name not in schema["required"]]
    records = [
        example,
        {**example, **{name: "never-seen-before" for name in facts["categorical"]}},
        {**example, **dict.fromkeys(optional)},
        {**example, **{name: math.nan for name in facts["numeric"] if name in optional}},
        {**example, **{name: math.inf for name in facts["numeric"] if name in optional}},
    ]
    frame = pd.DataFrame(records)
    torchscript = predict_probability(scripted, schema, frame)
    answered = predict_probability(onnx_model, schema, frame)
    assert np.abs(answered.astype(np.float64) - torchscript).max() <= TOLERANCE
    assert len(set(torchscript.tolist())) >= 3  # the cases are different inputs, not one answer repeated


def test_the_offline_scorer_uses_model_onnx_without_importing_torch(table, scripted, schema, onnx_dir, tmp_path):
    test = split_rows(table, "test").head(3000).drop(columns=["target", "split"])
    test.to_csv(tmp_path / "flights.csv", index=False)
    # torch cannot be imported in this process: any import of it fails
    code = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['predict'] + sys.argv[1:]; "
        "runpy.run_module('model.artifact.predict', run_name='__main__')"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--input_path",
            str(tmp_path / "flights.csv"),
            "--output_path",
            str(tmp_path / "scored.parquet"),
            "--export_dir",
            str(onnx_dir),
            "--runtime",
            "onnx",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    expected = predict_frame(scripted, schema, pd.read_csv(tmp_path / "flights.csv"))
    target = schema["x-model"]["target"]
    assert (
        np.abs(scored[f"{target}_probability"].to_numpy() - expected[f"{target}_probability"].to_numpy()).max()
        <= TOLERANCE
    )
    assert (scored["model_version"] == schema["x-model"]["version"]).all()
    assert len(scored) == len(test)


@pytest.mark.parametrize("runtime", ["torchscript", "onnx"])
def test_the_checked_scoring_answers_as_the_plain_one_on_rows_it_can_use(
    settings, table, schema, onnx_dir, runtime, tmp_path
):
    """`run.py --mode inference` and `python -m model.artifact.predict` share score_table: on the
    same rows they give the same probabilities and decisions."""
    rows = split_rows(table, "test").head(500).drop(columns=["target", "split"])
    rows.to_csv(tmp_path / "flights.csv", index=False)
    model = load_served_model(settings.paths.export_dir if runtime == "torchscript" else onnx_dir, runtime)[0]
    plain = score_table(model, schema, tmp_path / "flights.csv", tmp_path / "plain.parquet")
    config = json.loads((settings.paths.model_dir / CONFIG).read_text())
    checks = InputChecks(
        settings.features,
        {name: set(vocabulary) for name, vocabulary in zip(config["categorical"], config["vocabularies"])},
    )
    checked = score_table(model, schema, tmp_path / "flights.csv", tmp_path / "checked.csv", checks, "7")
    target = schema["x-model"]["target"]
    written = pd.read_csv(tmp_path / "checked.csv", keep_default_na=False)
    assert list(written.columns) == [*rows.columns, f"{target}_probability", PREDICT, "model_version", ISSUES]
    assert (
        np.abs(written[f"{target}_probability"].to_numpy() - plain[f"{target}_probability"].to_numpy()).max()
        <= TOLERANCE
    )
    assert written[PREDICT].tolist() == plain[target].astype(int).tolist() == checked[PREDICT].tolist()
    assert (written["model_version"] == 7).all() and (plain["model_version"] == schema["x-model"]["version"]).all()
