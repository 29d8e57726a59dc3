"""The training stage writes the same weights on any x86-64 machine: trained in processes that see
the CPU as different machines would (ATen's AVX2 or AVX-512 kernels, MKL's and numpy's code
paths for another processor), the stage's weights and metrics are the same bytes, while the
unpinned training function, under the same settings, gives weights that differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.config import DEFAULT_CONFIG, ROOT
from model.training.reproducible import PINNED_ENVIRONMENT
from model.training.weights import WEIGHTS
from tests.conftest import SLICE
from tests.tiers import slow_fixture


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def machines() -> dict[str, dict[str, str]]:
    """The numerics each library would choose on other machines, as far as this CPU can run
    them: the widest ATen kernels it has with MKL's automatic choice, and an older CPU's paths
    (generic ATen, MKL's SSE2 path, numpy without its AVX2 kernels)."""
    flags = cpu_flags()
    found = {"older": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "SSE2", "NPY_DISABLE_CPU_FEATURES": "X86_V3"}}
    if "avx2" in flags:
        found["avx2"] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO"}
    if "avx512f" in flags:
        found["avx512"] = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512"}
    return found


def run_training(command: list[str], machine: dict[str, str], params: Path) -> dict[str, bytes]:
    environment = {key: value for key, value in os.environ.items() if key not in PINNED_ENVIRONMENT}
    done = subprocess.run(
        [sys.executable, *command, str(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**environment, **machine, "PYTHONPATH": str(ROOT)},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    settings = yaml.safe_load(params.read_text())["paths"]
    return {
        "weights": (Path(settings["model_dir"]) / WEIGHTS).read_bytes(),
        "metrics": Path(settings["metrics"]).read_bytes(),
    }


STAGE = ["-m", "model.training.train", "--no-tracking", "--config"]
# The training function without the stage's pins: what every run did before.
UNPINNED = [
    "-c",
    "import sys; from model.config import load_settings; from model.training.train import train; "
    "train(load_settings(sys.argv[1]))",
]


@pytest.fixture(scope="module")
@slow_fixture
def trainings(table, tmp_path_factory) -> dict[tuple[str, str], dict[str, bytes]]:
    work = tmp_path_factory.mktemp("machines")
    table.to_parquet(work / "table.parquet")
    results = {}
    for machine, environment in machines().items():
        for kind, command in (("stage", STAGE), ("unpinned", UNPINNED)):
            out = work / f"{kind}-{machine}"
            params = work / f"{kind}-{machine}.yaml"
            params.write_text(
                yaml.safe_dump(
                    {
                        "base": str(DEFAULT_CONFIG),
                        **SLICE,
                        "paths": {
                            "processed": str(work / "table.parquet"),
                            "model_dir": str(out / "model"),
                            "metrics": str(out / "metrics.json"),
                            "tracking": str(out / "mlflow"),
                        },
                    }
                )
            )
            results[kind, machine] = run_training(command, environment, params)
    return results


def test_the_stage_writes_the_same_weights_and_metrics_whatever_the_cpu(trainings):
    stage = {machine: result for (kind, machine), result in trainings.items() if kind == "stage"}
    assert len(stage) >= 2
    first = next(iter(stage.values()))
    for machine, result in stage.items():
        assert result["weights"] == first["weights"], machine
        assert result["metrics"] == first["metrics"], machine


def test_without_the_pins_the_same_machines_train_different_weights(trainings):
    """The machines above are different enough to matter: the check above could fail."""
    unpinned = [result["weights"] for (kind, _), result in trainings.items() if kind == "unpinned"]
    assert len(set(unpinned)) > 1
