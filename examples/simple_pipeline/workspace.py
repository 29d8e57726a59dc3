"""The work folder the four steps share, and the params file that points the synthetic config at it.

Every step starts with `step_start`, whose `work_settings` writes <work>/params.yaml, which starts from
configs/synthetic.yaml (`base:`) and replaces only its output paths, so that the data, the
cleaned table, the model and its export all land under the work folder and nowhere else.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from model import configure_logging
from model.config import ROOT, Settings, load_settings, read_params

HERE = Path(__file__).resolve().parent
DEFAULT_WORK_DIR = HERE / "work"
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"
# Friendlier names for the paths the steps use; every other path is <work>/<key><suffix>.
NAMES = {
    "raw": "raw.parquet",
    "processed": "processed.parquet",
    "quality": "quality.parquet",
    "quality_db": "quality.sqlite",
    "model_dir": "model",
    "export_dir": "export",
    "metrics": "metrics.json",
}


def step_start(
    doc: str, options: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, Settings]:
    """What every step does first: its command line (--work-dir, and the step's own `options`),
    logging, and the settings that point at the work folder."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(os.environ.get("WORK_DIR") or DEFAULT_WORK_DIR),
        help=f"where every output goes (default: $WORK_DIR, else {DEFAULT_WORK_DIR.relative_to(ROOT)})",
    )
    if options:
        options(parser)
    args = parser.parse_args()
    configure_logging()
    return args, work_settings(args.work_dir)


def write_params(work_dir: Path) -> Path:
    """<work>/params.yaml: configs/synthetic.yaml with every output path under the work folder."""
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    base_paths = read_params(SYNTHETIC)["paths"]
    params = {
        "base": str(SYNTHETIC),
        "paths": {key: str(work_dir / NAMES.get(key, key + Path(value).suffix)) for key, value in base_paths.items()},
        "data": {"synthetic": {"dir": str(work_dir / "data")}},  # the generator writes data/train and data/test
        "stream": {"dir": str(work_dir / "stream")},
    }
    path = work_dir / "params.yaml"
    path.write_text(
        "# Written by examples/simple_pipeline/workspace.py: configs/synthetic.yaml, outputs moved here.\n"
        + yaml.safe_dump(params, sort_keys=False)
    )
    return path


def work_settings(work_dir: Path) -> Settings:
    """The synthetic config with its outputs under `work_dir` (the params file is rewritten each time)."""
    return load_settings(write_params(work_dir))


def step_printer(step: str):
    """print() with the step's name in front: the progress lines of pipeline.sh."""

    def say(message: str) -> None:
        print(f"[{step}] {message}", flush=True)

    return say
