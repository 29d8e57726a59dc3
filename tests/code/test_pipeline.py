"""The pipeline for another params file: dvc.yaml's stages with every command reading that file,
and a params file refused when its paths would mix its outputs with the default pipeline's."""

from __future__ import annotations

import pytest
import yaml

from model.config import ROOT
from model.lifecycle.pipeline import PipelineError, pipeline_stages, shared_paths, write_pipeline

RESOLVED = "pipelines/example/params.yaml"


def test_the_copy_has_dvc_yamls_stages_reading_the_other_params_file():
    source = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    copy = pipeline_stages(RESOLVED)["stages"]
    assert list(copy) == list(source)
    for name, stage in copy.items():
        assert "--config params.yaml" not in stage["cmd"], name
        assert stage["cmd"] == source[name]["cmd"].replace("--config params.yaml", f"--config {RESOLVED}")
        assert stage["deps"] == source[name]["deps"] and stage.get("outs") == source[name].get("outs")
        if "params" in source[name]:
            assert stage["params"] == [{RESOLVED: source[name]["params"]}], name
    assert any(f"--config {RESOLVED}" in stage["cmd"] for stage in copy.values())


def test_the_shipped_configs_have_paths_of_their_own():
    assert shared_paths(ROOT / "configs" / "synthetic.yaml") == []


@pytest.mark.parametrize(
    "paths, clashing",
    [
        ({"model_dir": "artifacts/model"}, ["model_dir"]),  # the same folder
        ({"export_dir": "artifacts/export/mine"}, ["export_dir"]),  # inside one of them
        ({"report_dir": "reports"}, ["report_dir"]),  # holding one of them
    ],
)
def test_paths_that_are_or_overlap_the_default_ones_are_refused(tmp_path, paths, clashing):
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "synthetic.yaml"), "paths": paths}))
    assert shared_paths(config) == clashing
    with pytest.raises(PipelineError, match=f"paths {clashing[0]} are \\(or overlap\\) the default pipeline's"):
        write_pipeline(config)
