"""What a model benchmark ran on, and where its results go: the machine's facts beside the
figures, the figures as JSON, and their table in the page that shows it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from model.base.markdown import replace_block


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine(load_start: float) -> dict[str, Any]:
    """The CPU, its cores and the load average when the run started and now (a busy machine
    widens the rounds' spread)."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load": load_start, "load_end": os.getloadavg()[0]}


def publish(saved: dict[str, Any], table: str, out: Path | None, doc: Path | None, markers: tuple[str, str]) -> None:
    """`saved` as JSON in `out`, `table` in `doc` between `markers`, and on standard output."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(saved, indent=2) + "\n")
    if doc is not None:
        replace_block(doc, markers, table)
    print(table)
