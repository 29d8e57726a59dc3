"""model.pt, model.onnx and mymodel.mar are the same bytes whoever builds them, wherever: two checkouts in
different folders, one reaching the venv through another path, with different hash seeds,
export and pack identical files from the same weights, and a failing model still points at the
line of Python in the project."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from model.artifact.stable_zip import ALIGNMENT, CREATED_ON, MANIFEST, ZIP_EPOCH
from model.config import ROOT

VENV = Path(sys.executable).parent.parent


def checkout(where: Path) -> Path:
    """The parts of the project export and archive run from, copied to `where`."""
    for name in ("model", "handler"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    return where


def build(repo: Path, python: Path, model_dir: Path, seed: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(repo)}
    for command in (
        ["-m", "model.artifact.export", "--model-dir", str(model_dir), "--export-dir", "export"],
        ["-m", "model.artifact.onnx_export", "--model-dir", str(model_dir), "--export-dir", "export"],
        [
            "-m",
            "model.artifact.archive",
            "--model-dir",
            str(model_dir),
            "--export-dir",
            "export",
            "--model-store",
            "store",
        ],
    ):
        done = subprocess.run([str(python), *command], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    name = json.loads((model_dir / "config.json").read_text())["name"]
    return {
        "model.pt": (repo / "export" / "model.pt").read_bytes(),
        "model.onnx": (repo / "export" / "model.onnx").read_bytes(),
        "mar": (repo / "store" / f"{name}.mar").read_bytes(),
    }


@pytest.fixture(scope="module")
def two_builds(settings, metrics, tmp_path_factory):
    work = tmp_path_factory.mktemp("checkouts")
    first = checkout(work / "alice" / "mymodel-serve")
    second = checkout(work / "bob" / "src" / "projects" / "serving")
    (work / "venv-elsewhere").symlink_to(VENV, target_is_directory=True)
    return (
        build(first, VENV / "bin" / "python", settings.paths.model_dir, "1"),
        build(second, work / "venv-elsewhere" / "bin" / "python", settings.paths.model_dir, "2"),
        (first, second),
    )


def test_two_checkouts_export_and_pack_the_same_bytes(two_builds):
    first, second, _ = two_builds
    assert hashlib.md5(first["model.pt"]).hexdigest() == hashlib.md5(second["model.pt"]).hexdigest()
    assert hashlib.md5(first["mar"]).hexdigest() == hashlib.md5(second["mar"]).hexdigest()
    assert hashlib.md5(first["model.onnx"]).hexdigest() == hashlib.md5(second["model.onnx"]).hexdigest()
    # the archive packs the export as the pipeline's archive stage does: model.onnx beside model.pt
    assert {"model.pt", "model.onnx", "schema.json"} <= set(zipfile.ZipFile(io.BytesIO(first["mar"])).namelist())


def test_no_path_of_the_machine_is_left_in_the_artifacts(two_builds):
    first, _, folders = two_builds
    for data in first.values():
        for folder in (*folders, VENV.resolve(), Path.home()):
            assert str(folder).encode() not in data, folder
    model = zipfile.ZipFile(io.BytesIO(first["model.pt"]))
    debug = b"".join(model.read(info) for info in model.infolist() if info.filename.endswith(".debug_pkl"))
    assert set(re.findall(rb"[\w./-]+\.py", debug)) >= {b"model/training/network.py", b"torch/nn/functional.py"}


def test_the_zips_are_stored_aligned_and_timeless(two_builds):
    first, _, _ = two_builds
    for name, data in first.items():
        if name == "model.onnx":  # a protobuf, not a zip
            continue
        archive = zipfile.ZipFile(io.BytesIO(data))
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED and info.date_time == ZIP_EPOCH, (name, info.filename)
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            assert start % ALIGNMENT == 0, (name, info.filename)
        if name == "mar":
            assert json.loads(archive.read(MANIFEST))["createdOn"] == CREATED_ON


def test_a_failing_model_points_at_the_projects_source_line(two_builds, tmp_path):
    first, _, _ = two_builds
    (tmp_path / "model.pt").write_bytes(first["model.pt"])
    model = torch.jit.load(str(tmp_path / "model.pt"))
    with pytest.raises(torch.jit.Error) as failure:
        model.features(torch.zeros(1, len(model.categorical), dtype=torch.long), torch.zeros(1, 1))
    assert re.search(r'File "model/training/network\.py", line \d+, in features', str(failure.value))
