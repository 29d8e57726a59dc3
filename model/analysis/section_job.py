"""The command line of an analysis stage that writes one section of the report into its own
folder: --config, and --out-dir (default <paths.report_dir>/<section>)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model import configure_logging
from model.config import DEFAULT_CONFIG, load_settings


def section_main(doc: str, section: str, run: Callable[..., Any]) -> None:
    """Parse the command line and call run(settings, out_dir=...)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--out-dir", type=Path, help=f"default: <paths.report_dir>/{section}")
    args = parser.parse_args()
    configure_logging()
    run(load_settings(args.config), out_dir=args.out_dir)
