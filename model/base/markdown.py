"""The generated blocks of the Markdown docs: a data frame as a Markdown table, and the fenced
block a command rewrites in place (results, load tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def markdown(frame: pd.DataFrame) -> str:
    cells = frame.map(lambda v: f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v))
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist()]) + "\n"


def block_markers(name: str, command: str) -> tuple[str, str]:
    """The comments that fence a generated block of the README."""
    return f"<!-- {name}:start (written by `{command}`; do not edit by hand) -->", f"<!-- {name}:end -->"


def replace_block(path: Path, markers: tuple[str, str], body: str) -> None:
    """Rewrite what stands between the markers in a Markdown file (markers kept)."""
    start_marker, end_marker = markers
    text = Path(path).read_text()
    start, end = text.index(start_marker), text.index(end_marker) + len(end_marker)
    Path(path).write_text(text[:start] + f"{start_marker}\n{body.strip()}\n{end_marker}" + text[end:])
