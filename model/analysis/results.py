"""The results block of README.md: the served model and the linear reference on the
test months, and the baselines' table, from what the pipeline's stages wrote.

    python -m model.analysis.results --config params.yaml --doc README.md   # or: make results"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from model import configure_logging
from model.analysis.baselines import models_markdown
from model.artifact.predict import load_served_model
from model.base.markdown import block_markers, replace_block
from model.config import DEFAULT_CONFIG, load_settings
from model.training.train import run_record

log = logging.getLogger(__name__)


RESULTS_MARKERS = block_markers("results", "make results")


def render_results(
    metrics: dict[str, Any], threshold: float, comparison: dict[str, Any], baselines: str | None = None
) -> str:
    """The results block: test-month metrics of the served model and the linear
    reference, and the baselines' comparison table (markdown) when it has been computed."""
    rows = [
        ("MLP (served)", comparison["test"]["mlp"]),
        ("logistic regression", comparison["test"]["logistic_regression"]),
    ]
    lines = [
        f"Model `{metrics['model_version']}`, test months ({comparison['test']['mlp']['rows']:,} flights, "
        f"{comparison['test']['mlp']['positive_rate']:.1%} late), threshold {threshold}; "
        f"trained in {metrics['train_seconds']:.0f} s ({metrics['epochs']} epochs).",
        "",
        "| model | ROC AUC | PR AUC | Brier | log loss | accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {m['brier']:.3f} | {m['log_loss']:.3f} | "
            f"{m['accuracy']:.3f} |"
            for name, m in rows
        ),
        *(
            [
                "",
                "All baselines on the same split, with forward-chaining cross-validation over the training and "
                "validation months (`make report`):",
                "",
                baselines.strip(),
            ]
            if baselines
            else []
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--doc", type=Path, required=True, help="rewrite this page's results block")
    parser.add_argument("--example-report", type=Path, help="also copy the latest report.html here")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    mlp = {**json.loads(settings.paths.metrics.read_text()), **json.loads(run_record(settings).read_text())}
    _, schema = load_served_model(settings.paths.export_dir)
    models = models_markdown(settings.paths.report_dir / "baselines")
    comparison = json.loads(settings.paths.comparison.read_text())
    replace_block(args.doc, RESULTS_MARKERS, render_results(mlp, schema["x-model"]["threshold"], comparison, models))
    log.info("updated the results in %s", args.doc)
    if args.example_report:
        shutil.copyfile(settings.paths.report_dir / "report.html", args.example_report)


if __name__ == "__main__":
    main()
