"""The package's layers, read from the source: imports go one way (data -> training ->
artifact -> analysis -> lifecycle), nothing imports in a circle, and what DVC and the images
list is what the code imports (the top-level packages' direction: test_packages.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.config import ROOT
from model.layers import LAYERS, closure, cycles, graph, imported, layer, module_name, modules, upward_imports

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_module_sits_in_a_layer():
    for name in modules():
        layer(name)  # raises, naming the module, for one outside the layers


def test_no_module_imports_a_later_layer():
    assert upward_imports(graph()) == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(graph()) == []


def test_the_layers_are_the_folders_of_the_package():
    folders = sorted(
        path.name for path in (ROOT / "model").iterdir() if path.is_dir() and (path / "__init__.py").exists()
    )
    assert folders == sorted(["base", *LAYERS])


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "model" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "model"


def test_the_check_finds_an_upward_import_and_a_cycle(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "training/__init__.py": "",
            "data/split.py": "def rows():\n    from model.training.train import fit  # at call time: still an import\n",
            "training/train.py": "from model.training import metrics\n",
            "training/metrics.py": "from model.training.train import fit\n",
        },
    )
    edges = graph(package)
    assert upward_imports(edges) == ["model.data.split (layer data) imports model.training.train (layer training)"]
    assert cycles(edges) == [["model.training.metrics", "model.training.train"]]


def stage_modules(stage: dict) -> list[str]:
    return re.findall(r"-m (model(?:\.\w+)+)", stage["cmd"])


@pytest.mark.parametrize("name", [name for name, stage in DVC["stages"].items() if stage_modules(stage)])
def test_each_dvc_stage_depends_on_every_module_its_command_imports(name):
    stage = DVC["stages"][name]
    deps = [dep for dep in stage["deps"] if not dep.startswith("${")]
    needed = {str(path) for path in closure(stage_modules(stage))}
    missing = {
        path for path in needed if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)
    }
    assert not missing, f"stage {name} runs code it does not depend on: add {sorted(missing)} to its deps"
    stale = [dep for dep in deps if dep.startswith("model/") and not (ROOT / dep).exists()]
    assert not stale, f"stage {name} depends on files that do not exist: {stale}"


def test_the_base_may_be_imported_by_every_layer_and_imports_none(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "base/__init__.py": "",
            "data/__init__.py": "",
            "lifecycle/__init__.py": "",
            "base/tables.py": "from model.data import split\n",
            "base/store.py": "def now():\n    from model.lifecycle.registry import clock  # at call time, still\n",
            "data/split.py": "from model.base import tables, store\n",
            "lifecycle/registry.py": "from model.base.store import now\n",
        },
    )
    edges = graph(package)
    assert layer("model.base.tables") == layer("model.base") == -1
    assert upward_imports(edges) == [
        "model.base.store (layer base) imports model.lifecycle.registry (layer lifecycle)",
        "model.base.tables (layer base) imports model.data.split (layer data)",
    ]


def test_the_dependency_check_sees_function_level_imports(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "data/a.py": "def f():\n    from model.data import b\n",
            "data/b.py": "",
        },
    )
    found = modules(package)
    assert imported(package / "data" / "a.py", found) == {"model.data.b"}
    assert module_name(package / "data" / "__init__.py", tmp_path) == "model.data"


def ignore_file_modules(path: Path) -> list[str]:
    return sorted(line[1:] for line in path.read_text().splitlines() if line.startswith("!model/"))


# What the images' builds run: the pipeline's prepare and train steps (the training stage both
# share, so both get the same modules), then each image's own entry.
TRAINING = ["model.data.prepare", "model.training.train"]
ENTRIES = {"Dockerfile": "model.artifact.archive", "Dockerfile.offline": "model.artifact.predict"}


@pytest.mark.parametrize("dockerfile", sorted(ENTRIES))
def test_each_image_gets_exactly_the_modules_its_builds_run(dockerfile):
    text = (ROOT / "docker" / dockerfile).read_text().replace(".", "/")
    for module in [*TRAINING, ENTRIES[dockerfile]]:
        assert module.replace(".", "/") in text, module
    listed = ignore_file_modules(ROOT / "docker" / f"{dockerfile}.dockerignore")
    assert listed == [str(path) for path in closure([*TRAINING, *ENTRIES.values()])]


def test_lint_checks_the_python_39_floor_of_what_the_serving_image_runs():
    makefile = (ROOT / "Makefile").read_text()
    assert "--closure model.artifact.archive" in makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]


def test_the_data_and_training_stages_load_no_plotting_library():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, model.data.prepare, model.training.train, model.artifact.predict; print(sorted(sys.modules))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "'matplotlib'" not in loaded
