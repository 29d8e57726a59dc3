"""How reports look: a Section (tables and PNG figures) per analysis and one self-contained HTML
page of sections (the Markdown docs' generated blocks are model.base.markdown's). Imports no
analysis, so every section module and job can build on it."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


@dataclass
class Section:
    title: str
    intro: str = ""  # a few sentences of plain text: what to look at, what it shows
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, frame)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG file)


def save_figure(figure: plt.Figure, path: Path) -> Path:
    """Write a matplotlib figure as PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _table(caption: str, frame: pd.DataFrame) -> str:
    body = frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="", escape=True)
    return f"<figure class='table'><figcaption>{html.escape(caption)}</figcaption>{body}</figure>"


def _figure(caption: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #345; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 3px 9px; text-align: right; }
th { background: #eef1f4; } tr:nth-child(even) td { background: #f8f9fa; } td:first-child { text-align: left; }
figure { margin: 1.2em 0; } figcaption { color: #555; font-size: 0.9em; } img { max-width: 100%; }
nav a { margin-right: 1em; }
"""


def render(title: str, summary: str, sections: list[Section], stamp: str = "") -> str:
    """One self-contained page. `stamp`: a line under the summary (e.g. when it was made); the data
    and model report has none, so the same inputs give the same page."""
    toc = " ".join(f"<a href='#s{i}'>{html.escape(s.title)}</a>" for i, s in enumerate(sections))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(summary)}</p>",
        f"<p><small>{html.escape(stamp)}</small></p>" if stamp else "",
        f"<nav>{toc}</nav>",
    ]
    for i, section in enumerate(sections):
        parts.append(f"<h2 id='s{i}'>{html.escape(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{html.escape(section.intro)}</p>")
        parts += [_table(caption, frame) for caption, frame in section.tables]
        parts += [_figure(caption, path) for caption, path in section.figures]
    parts.append("</body></html>")
    return "\n".join(parts)
