"""`make model-bench` on the test slice: every variant is built, measured at each batch size and
scored; the float variants answer as model.pt does, the int8 ones within a small accuracy loss,
and the table lands between its markers. `make served-model-bench` serves model.pt and model.onnx
and measures both at each body size."""

from __future__ import annotations

import json

import pytest
import yaml

from benchmarks.model_variants import BATCHES, MARKERS, run
from benchmarks.served_variants import BODIES
from benchmarks.served_variants import MARKERS as SERVED_MARKERS
from benchmarks.served_variants import run as run_served
from model.config import DEFAULT_CONFIG
from tests.conftest import SLICE

FLOAT_VARIANTS = ("torchscript-frozen", "torch-export", "onnxruntime-1t", "onnxruntime-2t")


@pytest.fixture(scope="module")
def params(settings, metrics, table, tmp_path_factory):
    """The slice's params, with its trained model and its table on disk."""
    work = tmp_path_factory.mktemp("model-variants")
    table.to_parquet(work / "table.parquet")
    params = work / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "base": str(DEFAULT_CONFIG),
                **SLICE,
                "paths": {"processed": str(work / "table.parquet"), "model_dir": str(settings.paths.model_dir)},
            }
        )
    )
    return params


@pytest.fixture(scope="module")
def measured(params):
    work = params.parent
    doc = work / "page.md"
    doc.write_text(f"# a page\n\n{MARKERS[0]}\nold\n{MARKERS[1]}\n\nafter\n")
    rows = run(params, rounds=2, seconds=0.02, doc=doc, out=work / "model_variants.json")
    return rows, doc, json.loads((work / "model_variants.json").read_text())


def test_every_variant_is_measured_at_each_batch_size(measured):
    rows, _, saved = measured
    names = [row["variant"] for row in rows]
    assert names[0] == "torchscript"
    assert set(names) >= {"torchscript", *FLOAT_VARIANTS, "torch-int8", "onnxruntime-int8"}
    for row in rows:
        assert row["bytes"] > 0
        for size in BATCHES:
            assert row[f"records_per_s_{size}"] > 0
            assert len(saved["rates"][row["variant"]][str(size)]) == 2


def test_float_variants_answer_as_model_pt_and_int8_ones_nearly(measured):
    rows = {row["variant"]: row for row in measured[0]}
    for name in FLOAT_VARIANTS:
        assert rows[name]["max_abs_diff"] <= 1e-6, name
        assert abs(rows[name]["delta_roc_auc"]) <= 1e-5, name
    for name in ("torch-int8", "onnxruntime-int8"):
        assert 0 < rows[name]["max_abs_diff"] < 0.1, name
        assert abs(rows[name]["delta_roc_auc"]) < 0.01, name
    # int8 weights take less room than float32 ones
    assert rows["onnxruntime-int8"]["bytes"] < rows["onnxruntime-1t"]["bytes"]


def test_the_table_is_written_between_its_markers(measured):
    rows, doc, _ = measured
    text = doc.read_text()
    assert "old" not in text and text.endswith("after\n")
    block = text.split(MARKERS[0])[1].split(MARKERS[1])[0]
    for row in rows:
        assert f"| `{row['variant']}` |" in block
    assert "wins" in block


def test_the_served_comparison_measures_both_servers_at_each_body_size(params, tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(f"{SERVED_MARKERS[0]}\n{SERVED_MARKERS[1]}\n")
    saved = run_served(params, rounds=1, seconds=0.2, doc=doc, out=None)
    for variant in ("model.pt", "model.onnx"):
        for size in BODIES:
            (measured_round,) = saved["results"][variant][str(size)]
            assert measured_round["p50_ms"] > 0 and measured_round["records_per_s"] > 0
    assert all(f"| {size:,} |" in doc.read_text() for size in BODIES)
