"""The simple pipeline runs with one command: examples/simple_pipeline/pipeline.sh chains
data creation -> preprocessing -> training -> testing and passes on the synthetic data."""

import os
import re
import subprocess
import sys

import pandas as pd

from model.config import ROOT
from model.data.synthetic import FAULT_CODES, READINGS

PIPELINE = ROOT / "examples" / "simple_pipeline" / "pipeline.sh"


def test_the_simple_pipeline_runs_its_four_steps_and_passes(tmp_path):
    env = {**os.environ, "WORK_DIR": str(tmp_path), "PYTHON": sys.executable}
    env.pop("MIN_ROC_AUC", None)
    done = subprocess.run(["bash", str(PIPELINE)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("1/4 data creation", "2/4 preprocessing", "3/4 training", "4/4 testing"):
        assert f"[{step}]" in done.stdout

    files = {part: sorted((tmp_path / "data" / part).glob("*.csv")) for part in ("train", "test")}
    assert files["train"] and files["test"]
    readings = pd.concat([pd.read_csv(path) for path in files["train"] + files["test"]])[list(READINGS)]
    assert readings.isin(FAULT_CODES).to_numpy().any(), "no injected fault codes"
    assert readings.isna().to_numpy().any(), "no missing readings"

    assert (tmp_path / "export" / "model.pt").is_file()
    assert (tmp_path / "params.yaml").is_file()

    match = re.search(r"ROC AUC (\d+\.\d+) >= 0\.6: passed", done.stdout)
    assert match, done.stdout
    assert float(match.group(1)) > 0.6
