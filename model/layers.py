"""The package's layers and its import graph, read from the source (nothing is imported).

    python -m model.layers                  # every module's imports of the package, by layer
    python -m model.layers --graph          # the same as a Graphviz dot graph
    python -m model.layers --closure model.artifact.archive   # the files a module needs

The layers follow the data flow; a module may import its own layer, earlier layers and the
base (this package's __init__ and config, and model/base/: helpers general enough for any
layer), never a later layer; the base imports no layer at all. tests/code/test_layers.py
enforces it, and the images copy the closure of what they run.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "model"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
# In data-flow order: each imports only the ones before it.
LAYERS = ("data", "training", "artifact", "analysis", "lifecycle")
BASE = ("model", "model.config", "model.layers")
BASE_PACKAGE = "base"  # model.base.*: helpers every layer may import, importing no layer


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.resolve().relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path, package_dir.parent): path for path in sorted(package_dir.rglob("*.py"))}


def imported(path: Path, known: Iterable[str]) -> set[str]:
    """The package's modules `path` imports anywhere in its source (function-level imports
    included): `from model.x import y` names model.x.y when that is a module, else model.x."""
    known = set(known)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """module -> the package's modules it imports (itself and package __init__s left out)."""
    found = modules(package_dir)
    edges = {}
    for name, path in found.items():
        edges[name] = {target for target in imported(path, found) if target != name}
    return edges


def layer(name: str) -> int:
    """The layer's position in the flow; the base is -1."""
    parts = name.split(".")
    if name in BASE or (len(parts) > 1 and parts[1] == BASE_PACKAGE):
        return -1
    if len(parts) < 2 or parts[1] not in LAYERS:
        raise ValueError(
            f"{name} is in no layer: put it in one of {PACKAGE}/{{{','.join(LAYERS)}}}/, "
            f"or in {PACKAGE}/{BASE_PACKAGE}/ when every layer may use it"
        )
    return LAYERS.index(parts[1])


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a later layer (or of a layer from the base), as a sentence."""
    return [
        f"{source} (layer {LAYERS[layer(source)] if layer(source) >= 0 else 'base'}) imports {target} "
        f"(layer {LAYERS[layer(target)]})"
        for source, targets in sorted(edges.items())
        for target in sorted(targets)
        if layer(target) > layer(source)
    ]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def closure(names: Iterable[str], root: Path = ROOT) -> list[Path]:
    """The files the named modules need from the package: themselves, what they import, and
    every enclosing package's __init__.py, relative to the checkout."""
    found = modules(root / PACKAGE)
    edges = graph(root / PACKAGE)
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += edges.get(name, ())
    return sorted(found[name].relative_to(root) for name in needed)


def describe(edges: dict[str, set[str]]) -> str:
    lines = []
    for position, name in [(-1, "base"), *enumerate(LAYERS)]:
        lines.append(f"{name}:")
        for source in sorted(s for s in edges if layer(s) == position):
            short = sorted(t.removeprefix(f"{PACKAGE}.") for t in edges[source])
            lines.append(f"  {source.removeprefix(f'{PACKAGE}.')} -> {', '.join(short) or '-'}")
    return "\n".join(lines)


def dot(edges: dict[str, set[str]]) -> str:
    lines = ["digraph model {", "  rankdir=LR; node [shape=box, fontsize=10];"]
    for position, name in [(-1, "base"), *enumerate(LAYERS)]:
        members = " ".join(f'"{s}";' for s in sorted(edges) if layer(s) == position)
        lines.append(f'  subgraph cluster_{name} {{ label="{name}"; {members} }}')
    lines += [f'  "{s}" -> "{t}";' for s in sorted(edges) for t in sorted(edges[s])]
    return "\n".join(lines + ["}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", action="store_true", help="Graphviz dot instead of text")
    parser.add_argument("--closure", nargs="+", metavar="MODULE", help="the files these modules need")
    args = parser.parse_args()
    if args.closure:
        print("\n".join(str(path) for path in closure(args.closure)))
        return
    edges = graph()
    print(dot(edges) if args.graph else describe(edges))
    problems = upward_imports(edges) + [" <-> ".join(cycle) for cycle in cycles(edges)]
    if problems:
        raise SystemExit("layering broken:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
