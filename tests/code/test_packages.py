"""The top-level packages import one way, read from the source (nothing is imported): the
product (model, the handler, the ONNX server) imports nothing of what starts, loads or measures
it; the harness starts real servers; the load-test gate uses the harness; the benchmarks use
all of these. docs/architecture.md states the same table."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from model.config import ROOT

PRODUCT = ("model", "handler", "serving")
# What each top-level package (or script folder, or script) may import of the others.
ALLOWED: dict[str, tuple[str, ...]] = {
    "model": (),
    "handler": (),  # TorchServe loads it on its own: it stands apart even from model
    "serving": ("model", "handler"),
    "harness": ("model",),
    "loadtest": ("model", "handler", "harness"),
    "benchmarks": ("model", "handler", "harness", "loadtest"),
    "tests": ("model", "handler", "serving", "harness", "loadtest", "benchmarks"),
    "examples": ("model",),
    "docker": (),  # the images' own scripts
    "deploy": (),
    "run.py": ("model",),
}
TOP = {name.removesuffix(".py") for name in ALLOWED}


def sources(root: Path, name: str) -> list[Path]:
    path = root / name
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def imported(path: Path) -> Iterator[str]:
    """The top-level names `path` imports anywhere in its source (function-level imports
    included; relative imports stay inside their own package)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def violations(root: Path = ROOT) -> list[str]:
    """Every import of a top-level package its importer may not import, as a sentence."""
    found = []
    for name, allowed in ALLOWED.items():
        own = name.removesuffix(".py")
        for path in sources(root, name):
            for target in sorted(set(imported(path)) & TOP - {own} - set(allowed)):
                found.append(
                    f"{path.relative_to(root)} imports {target} "
                    f"({own} may import {', '.join(allowed) or 'none of the others'})"
                )
    return found


def test_the_packages_import_one_way():
    assert violations() == []


def test_the_product_imports_nothing_that_starts_or_measures_it():
    for name in PRODUCT:
        assert not set(ALLOWED[name]) - set(PRODUCT), name


def test_every_top_level_package_has_a_place_in_the_table():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages <= TOP, f"add {sorted(packages - TOP)} to ALLOWED and to docs/architecture.md"


def test_the_check_finds_a_planted_import_against_the_direction(tmp_path):
    for name in ALLOWED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    assert violations(tmp_path) == []
    router = tmp_path / "model" / "lifecycle" / "canary_router.py"
    router.write_text(router.read_text() + "\n\ndef planted():\n    from harness.torchserve import torchserve\n")
    gate = tmp_path / "loadtest" / "malformed.py"
    gate.write_text(gate.read_text() + "\nimport benchmarks.bench\n")
    assert violations(tmp_path) == [
        "model/lifecycle/canary_router.py imports harness (model may import none of the others)",
        "loadtest/malformed.py imports benchmarks (loadtest may import model, handler, harness)",
    ]


def test_the_architecture_page_states_the_same_direction():
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("\n## The top-level packages\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([\w.]+)/?` \| (.*?) \|", section, re.M))
    stated = {name: tuple(re.findall(r"`(\w+)/`", imports)) for name, imports in rows.items()}
    assert stated == ALLOWED
