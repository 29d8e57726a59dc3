"""One self-contained HTML report of the data and the model: EDA, quality, drift, baselines and
interpretation, each a section laid out by model.analysis.layout.

    python -m model.analysis.report --config params.yaml     # or: make report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model import configure_logging
from model.analysis import baselines, interpret
from model.analysis.drift import drift_job, drift_section
from model.analysis.eda import eda_section
from model.analysis.layout import render
from model.analysis.quality_report import quality_section
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.prepare import load_table


def build_report(settings: Settings, refresh_analyses: bool = False) -> Path:
    """EDA, quality and drift are computed here; baselines and interpretation are read from
    what their own jobs wrote (their DVC stages), or run now when missing or asked to."""
    folder = settings.paths.report_dir
    table = load_table(settings)
    analyses = [(baselines, folder / "baselines"), (interpret, folder / "interpret")]
    for module, out_dir in analyses:
        if refresh_analyses or not (out_dir / module.RESULTS).exists():
            module.run(settings, table, out_dir)
    sections = [
        eda_section(table, settings, folder / "eda"),
        quality_section(settings, folder / "quality"),
        drift_section(drift_job(settings), settings),
        *(module.build_section(out_dir) for module, out_dir in analyses),
    ]
    metrics = json.loads(settings.paths.metrics.read_text())
    summary = (
        f"Model {metrics['model_version']} predicts {settings.data.target} from the {settings.data.source} "
        f"source: test ROC AUC {metrics['test']['roc_auc']:.3f}, PR AUC {metrics['test']['pr_auc']:.3f}, "
        f"Brier {metrics['test']['brier']:.3f} on {metrics['test']['rows']:,} rows."
    )
    path = folder / "report.html"
    path.write_text(render(f"{settings.model.name}: data and model report", summary, sections))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--refresh", action="store_true", help="re-run baselines and interpretation")
    args = parser.parse_args()
    configure_logging()
    print(build_report(load_settings(args.config), refresh_analyses=args.refresh))


if __name__ == "__main__":
    main()
