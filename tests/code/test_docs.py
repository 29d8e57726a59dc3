"""The README keeps its promises: the two commands, and results written by the code."""

import re
import subprocess

from model.baselines import LABELS
from model.config import ROOT
from model.evaluate import RESULTS_END, RESULTS_START, render_results

README = (ROOT / "README.md").read_text()


def test_quick_start_is_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("## ", 1)[0]
    assert re.search(r"^make run\b", quick_start, re.M) and re.search(r"^make test\b", quick_start, re.M)


def test_results_block_has_the_layout_the_code_writes():
    block = README[README.index(RESULTS_START):README.index(RESULTS_END) + len(RESULTS_END)]
    metric = {"roc_auc": 0.5, "pr_auc": 0.5, "brier": 0.2, "log_loss": 0.6, "accuracy": 0.7, "rows": 1,
              "positive_rate": 0.2}
    rendered = render_results({"model_version": "v", "threshold": 0.5, "train_seconds": 1, "epochs": 1},
                              {"test": {"mlp": metric, "logistic_regression": metric}})
    first_table = block.split("All baselines")[0]
    assert [line.split("|")[1] for line in first_table.splitlines() if line.startswith("| ")] == \
           [line.split("|")[1] for line in rendered.splitlines() if line.startswith("| ")]
    assert re.search(r"\| MLP \(served\) \| 0\.\d{3} \|", block)
    baselines = block.split("All baselines")[1].splitlines()
    assert [line.split("|")[1].strip() for line in baselines if line.startswith("| ")][2:] == list(LABELS.values())


def test_make_help_lists_the_documented_targets():
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("setup", "run", "serve", "stop", "test", "lint", "archive", "train", "results", "image",
                   "image-test", "loadtest-image", "container-tools"):
        assert re.search(rf"\b{target}\b", listed), target
