"""The physical limit: model.pt's forward pass in a loop, no server, one torch thread.

    python -m benchmarks.forward --export-dir artifacts/export --records records.json --seconds 5

Batches of real records are prepared before timing (the handler's own conversion), so
only the forward is timed; records per second is what a server could reach on one core
if requests cost nothing to receive, parse and answer. Runs as its own process so its
memory is torch and the model alone. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from benchmarks.memory import MB
from handler.service import PredictionService
from model.artifact.export import SCHEMA, TORCHSCRIPT


def prepared_batches(
    service: PredictionService, records: list[dict[str, Any]], batch: int
) -> list[tuple[list[list[str]], torch.Tensor]]:
    batches = []
    for start in range(0, len(records) - batch + 1, batch):
        categorical, numeric = service.model_inputs(service.rows(records[start : start + batch]))
        batches.append((categorical, torch.tensor(numeric, dtype=torch.float32).reshape(batch, -1)))
    if not batches:
        raise ValueError(f"{len(records)} records do not fill one batch of {batch}")
    return batches


@torch.inference_mode()
def forward_rate(
    model: torch.jit.ScriptModule, batches: list[tuple[list[list[str]], torch.Tensor]], seconds: float
) -> dict[str, Any]:
    """Records per second and per-call latency percentiles (ms) over `seconds` of back-to-back forwards."""
    for categorical, values in batches[:3]:  # TorchScript optimizes its graph on the first calls
        model(categorical, values)
    durations: list[int] = []
    records = 0
    deadline = time.perf_counter_ns() + int(seconds * 1e9)
    while time.perf_counter_ns() < deadline:
        for categorical, values in batches:
            started = time.perf_counter_ns()
            model(categorical, values)
            durations.append(time.perf_counter_ns() - started)
            records += values.shape[0]
    durations.sort()
    total_s = sum(durations) / 1e9
    return {
        "batch": batches[0][1].shape[0],
        "calls": len(durations),
        "requests_per_s": records / total_s,
        "latency_ms": {
            name: durations[min(len(durations) - 1, int(q * len(durations)))] / 1e6
            for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))
        },
    }


def measure(export_dir: Path, records: list[dict[str, Any]], seconds: float, batches: list[int]) -> dict[str, Any]:
    torch.set_num_threads(1)
    model = torch.jit.load(str(export_dir / TORCHSCRIPT), map_location="cpu").eval()
    service = PredictionService(json.loads((export_dir / SCHEMA).read_text()), predict=lambda *_: [])
    points = [forward_rate(model, prepared_batches(service, records, batch), seconds) for batch in batches]
    memory = psutil.Process().memory_full_info()  # after the loops: what the forward needed at its peak
    return {"points": points, "memory": {"rss_peak_mb": memory.rss / MB, "pss_peak_mb": memory.pss / MB}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", type=Path, required=True, help="model.pt + schema.json")
    parser.add_argument("--records", type=Path, required=True, help="a JSON list of request records")
    parser.add_argument("--seconds", type=float, default=5.0, help="per batch size")
    parser.add_argument("--batch", type=int, action="append", help="records per forward (repeatable; default 1, 32)")
    args = parser.parse_args()
    records = json.loads(args.records.read_text())
    print(json.dumps(measure(args.export_dir, records, args.seconds, args.batch or [1, 32])))


if __name__ == "__main__":
    main()
