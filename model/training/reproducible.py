"""The same weights on any x86-64 machine: the training stage runs with numerics that do not
depend on the CPU it runs on.

torch, MKL and numpy each pick their fastest kernels for the CPU at hand when they load
(AVX-512 on one machine, AVX2 on another), and kernels of different widths sum and round in a
different order: the same seed and data then give weights a few ulps apart, another model
version, other metrics. The stage pins each library to a code path every x86-64 CPU runs:

- ATen's generic kernels (`ATEN_CPU_CAPABILITY=default`) instead of its AVX2/AVX-512 ones,
- MKL's conditional numerical reproducibility (`MKL_CBWR=COMPATIBLE`: the same results on
  Intel and non-Intel processors of any generation) for the linear layers' matrix products,
- oneDNN capped at its baseline instruction set (torch does not use it for float32 training
  today; the cap keeps a future torch that does from bringing the CPU back in),
- numpy's dispatched kernels off (`NPY_DISABLE_CPU_FEATURES`: its AVX2 and AVX-512 math
  functions round differently from the baseline ones), which the metrics and threshold use,
- a fixed thread count (`train.threads` in params.yaml, never the machine's core count) and
  torch's deterministic algorithms.

The libraries read these variables when they load, so the stage re-executes itself with them
set before anything imports torch or numpy (`run_pinned`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# What each library reads when it loads. NPY_DISABLE_CPU_FEATURES names numpy's dispatch
# targets above its x86-64-v2 baseline (numpy 2.x's floor: every machine it runs on has it).
PINNED_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
}


def pinned(environment: Mapping[str, str] | None = None) -> bool:
    """Whether `environment` (default: this process's) carries every pinned value."""
    environment = os.environ if environment is None else environment
    return all(environment.get(name) == value for name, value in PINNED_ENVIRONMENT.items())


def run_pinned(module: str) -> None:
    """Re-execute `python -m <module> <the same arguments>` with the pinned environment, unless
    this process already has it (then return). Replaces the process: nothing after the call runs
    in the unpinned one."""
    if pinned():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], {**os.environ, **PINNED_ENVIRONMENT})


def pin_torch(threads: int) -> None:
    """The in-process half: the thread count from the config and deterministic algorithms."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT":
        raise RuntimeError(
            f"ATen chose its {capability} kernels: run training through run_pinned, which sets "
            "ATEN_CPU_CAPABILITY before torch loads"
        )
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
