"""The served model's forward, optimised several ways and measured in one run: size on disk,
records/s at batch 1, 32 and 1,000 (in process, one thread unless named), and test-month
accuracy against the float TorchScript model.

    python -m benchmarks.model_variants --config params.yaml --doc docs/model.md     # make model-bench

Variants, each built here from the trained weights (paths.model_dir):
- torchscript: model.pt as served (torch.jit.script, stable bytes),
- torchscript-frozen: torch.jit.freeze + torch.jit.optimize_for_inference,
- torch-export: torch.export of the tensor part (strings cannot enter an exported program: the
  vocabulary lookups stay in Python, as the scripted model does them),
- onnxruntime (1 and 2 threads): model.onnx, preprocessing inside, all graph optimisations,
- torch-int8: dynamic int8 quantisation of the linear layers (torch.ao), scripted,
- onnxruntime-int8: dynamic int8 quantisation of model.onnx's matrix products (onnxruntime.quantization).

Every input is built before the clock starts (strings and numbers as the handler passes them).
Rounds alternate the variants in a new order each time, so load on a shared machine falls on
all of them; the noise is the spread of each variant's rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks.measured import machine, publish
from model import configure_logging
from model.artifact.export import export_model
from model.artifact.onnx_export import export_onnx
from model.artifact.predict import ONNX_MODEL, OnnxModel
from model.base.markdown import block_markers, replace_block
from model.config import DEFAULT_CONFIG, load_settings
from model.data.prepare import load_table
from model.data.sources import TARGET
from model.data.split import split_rows
from model.training.inputs import model_inputs
from model.training.network import TabularNet
from model.training.weights import load_network

log = logging.getLogger(__name__)

BATCHES = (1, 32, 1000)
MARKERS = block_markers("model-variants", "make model-bench")
CALIBRATION_BINS = 10


class Variant:
    """One way to run the model: `prepare(frame)` builds its inputs, `run(inputs)` its probabilities."""

    def __init__(
        self, name: str, path: Path, prepare: Callable[[pd.DataFrame], Any], run: Callable[[Any], np.ndarray], note: str
    ):
        self.name, self.path, self.prepare, self.run, self.note = name, path, prepare, run, note


def torch_inputs(fields: tuple[list[str], list[str]]) -> Callable[[pd.DataFrame], Any]:
    return lambda frame: model_inputs(frame, *fields)


def torch_run(model: Callable[..., torch.Tensor]) -> Callable[[Any], np.ndarray]:
    def run(inputs: Any) -> np.ndarray:
        with torch.inference_mode():
            return model(*inputs).numpy()

    return run


def onnx_run(model: OnnxModel) -> Callable[[Any], np.ndarray]:
    return lambda feed: model.session.run([model.output], feed)[0]


class TensorPart(torch.nn.Module):
    """The network after its vocabulary lookups: category indices and numbers in, probability out."""

    def __init__(self, network: TabularNet):
        super().__init__()
        self.network = network

    def forward(self, indices: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network.logits(indices, numeric))


def build_variants(model_dir: Path, work: Path, fields: tuple[list[str], list[str]]) -> list[Variant]:
    network, _ = load_network(model_dir)
    variants = []
    export_model(model_dir, work)
    scripted = torch.jit.load(str(work / "model.pt")).eval()
    variants.append(
        Variant("torchscript", work / "model.pt", torch_inputs(fields), torch_run(scripted), "model.pt as served")
    )

    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(network).eval()))
    frozen.save(str(work / "model-frozen.pt"))
    variants.append(
        Variant(
            "torchscript-frozen",
            work / "model-frozen.pt",
            torch_inputs(fields),
            torch_run(frozen),
            "torch.jit.freeze + optimize_for_inference",
        )
    )

    try:
        part = TensorPart(network).eval()
        categorical, numeric = model_inputs(pd.DataFrame({name: [None] * 2 for name in fields[0] + fields[1]}), *fields)
        example = (network.category_indices(categorical, 2), numeric)
        batch = torch.export.Dim("records", min=1, max=100_000)
        exported = torch.export.export(part, example, dynamic_shapes=({0: batch}, {0: batch}))
        torch.export.save(exported, str(work / "model.pt2"))
        program = exported.module()

        def exported_run(inputs: Any) -> np.ndarray:
            categorical, numeric = inputs
            with torch.inference_mode():
                return program(network.category_indices(categorical, numeric.shape[0]), numeric).numpy()

        variants.append(
            Variant(
                "torch-export",
                work / "model.pt2",
                torch_inputs(fields),
                exported_run,
                "torch.export of the tensor part; lookups in Python",
            )
        )
    except Exception as error:  # noqa: BLE001 - reported in the table instead of a row
        log.warning("torch.export does not apply: %s", error)

    export_onnx(model_dir, work)
    for threads in (1, 2):
        session = OnnxModel(work / ONNX_MODEL, threads=threads)
        variants.append(
            Variant(
                f"onnxruntime-{threads}t",
                work / ONNX_MODEL,
                session.frame_inputs,
                onnx_run(session),
                f"model.onnx, all graph optimisations, {threads} thread(s)",
            )
        )

    quantized = torch.ao.quantization.quantize_dynamic(network, {torch.nn.Linear}, dtype=torch.qint8)
    quantized_script = torch.jit.script(quantized)
    quantized_script.save(str(work / "model-int8.pt"))
    variants.append(
        Variant(
            "torch-int8",
            work / "model-int8.pt",
            torch_inputs(fields),
            torch_run(quantized_script),
            "dynamic int8 linear layers (torch.ao), scripted",
        )
    )

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(work / ONNX_MODEL), str(work / "model-int8.onnx"), weight_type=QuantType.QInt8)
    session8 = OnnxModel(work / "model-int8.onnx", threads=1)
    variants.append(
        Variant(
            "onnxruntime-int8",
            work / "model-int8.onnx",
            session8.frame_inputs,
            onnx_run(session8),
            "dynamic int8 MatMul/Gemm (onnxruntime.quantization), 1 thread",
        )
    )
    return variants


def calibration_error(labels: np.ndarray, probability: np.ndarray) -> float:
    """Expected calibration error over equal-count bins: the mean |observed - predicted| rate."""
    order = np.argsort(probability, kind="stable")
    bins = np.array_split(order, CALIBRATION_BINS)
    return float(sum(len(b) * abs(labels[b].mean() - probability[b].mean()) for b in bins) / len(labels))


def accuracy(variant: Variant, test: pd.DataFrame, labels: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    probability = np.concatenate(
        [variant.run(variant.prepare(test.iloc[start : start + 1000])) for start in range(0, len(test), 1000)]
    ).astype(np.float64)
    return {
        "roc_auc": float(roc_auc_score(labels, probability)),
        "log_loss": float(log_loss(labels, np.clip(probability, 1e-7, 1 - 1e-7))),
        "calibration_error": calibration_error(labels, probability),
    }, probability


def records_per_second(variant: Variant, inputs: list[Any], size: int, seconds: float) -> float:
    """Calls over the prepared batches (in turn) for at least `seconds` and 3 calls."""
    calls, started = 0, time.perf_counter()
    while True:
        variant.run(inputs[calls % len(inputs)])
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= 3:
            return calls * size / elapsed


def measure(variants: list[Variant], test: pd.DataFrame, rounds: int, seconds: float) -> dict[str, dict[str, list]]:
    rng = random.Random(0)
    prepared = {}
    for variant in variants:
        for size in BATCHES:
            starts = [rng.randrange(0, len(test) - size) for _ in range(8)]
            prepared[variant.name, size] = [variant.prepare(test.iloc[s : s + size]) for s in starts]
            variant.run(prepared[variant.name, size][0])  # warm-up: TorchScript profiles its first calls
            variant.run(prepared[variant.name, size][0])
    rates: dict[str, dict[str, list]] = {v.name: {str(size): [] for size in BATCHES} for v in variants}
    for round_number in range(rounds):
        order = variants[:]
        rng.shuffle(order)
        for variant in order:
            for size in BATCHES:
                rates[variant.name][str(size)].append(
                    records_per_second(variant, prepared[variant.name, size], size, seconds)
                )
        log.info("round %d/%d done", round_number + 1, rounds)
    return rates


# A variant wins when it is faster than TorchScript in every round at every batch size (each round
# measures both back to back, so load on the shared machine falls on both) and loses no accuracy.
MAX_ROC_AUC_LOSS = 0.001
MAX_LOG_LOSS_GAIN = 0.001


def speed(row: dict, rates: dict, reference: str) -> dict:
    """The row with its records/s, noise, speed-up against the reference per round, and verdict."""
    for size in BATCHES:
        own, base = rates[row["variant"]][str(size)], rates[reference][str(size)]
        ratios = [mine / theirs for mine, theirs in zip(own, base)]
        row[f"records_per_s_{size}"] = statistics.median(own)
        row[f"noise_{size}"] = (max(own) - min(own)) / 2 / statistics.median(own)
        row[f"speedup_{size}"] = statistics.median(ratios)
        row[f"speedup_min_{size}"], row[f"speedup_max_{size}"] = min(ratios), max(ratios)
    row["wins"] = (
        row["variant"] != reference
        and all(row[f"speedup_min_{size}"] > 1 for size in BATCHES)
        and row["delta_roc_auc"] >= -MAX_ROC_AUC_LOSS
        and row["delta_log_loss"] <= MAX_LOG_LOSS_GAIN
    )
    return row


def summary(variants: list[Variant], rates: dict, scores: dict, reference: str, deltas: dict) -> list[dict]:
    rows = []
    for variant in variants:
        row = {
            "variant": variant.name,
            "note": variant.note,
            "bytes": variant.path.stat().st_size,
            **scores[variant.name],
            "max_abs_diff": deltas[variant.name],
        }
        for key in ("roc_auc", "log_loss", "calibration_error"):
            row[f"delta_{key}"] = scores[variant.name][key] - scores[reference][key]
        rows.append(speed(row, rates, reference))
    return rows


def markdown(rows: list[dict], facts: dict[str, Any]) -> str:
    lines = [
        f"Model {facts['model_version']} ({facts['model']}), {facts['test_rows']:,} test-month records, "
        f"{facts['rounds']} alternating rounds of at least {facts['seconds']:g} s per variant and batch "
        f"on {facts['cpu']} ({facts['cores']} cores, load average {facts['load']:.1f} at the start, "
        f"{facts['load_end']:.1f} at the end). Records/s: the median of the rounds ± half their range "
        f"relative to it (the machine's noise). Accuracy: on all test-month records, Δ against `torchscript`.",
        "",
        "| variant | size | records/s at 1 | at 32 | at 1,000 | ROC AUC (Δ) | log loss (Δ) "
        "| calibration error (Δ) | max \\|Δp\\| |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        rates = " | ".join(f"{row[f'records_per_s_{size}']:,.0f} ± {row[f'noise_{size}']:.0%}" for size in BATCHES)
        lines.append(
            f"| `{row['variant']}` | {row['bytes'] / 1024:,.0f} KiB | {rates} "
            f"| {row['roc_auc']:.4f} ({row['delta_roc_auc']:+.4f}) "
            f"| {row['log_loss']:.4f} ({row['delta_log_loss']:+.4f}) "
            f"| {row['calibration_error']:.4f} ({row['delta_calibration_error']:+.4f}) "
            f"| {row['max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "Speed against `torchscript` measured in the same round (median, lowest–highest of the rounds), "
        f"and the verdict: faster in every round at every batch size, ROC AUC down at most "
        f"{MAX_ROC_AUC_LOSS}, log loss up at most {MAX_LOG_LOSS_GAIN}.",
        "",
        "| variant | × at 1 | × at 32 | × at 1,000 | wins |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows[1:]:
        ratios = " | ".join(
            f"{row[f'speedup_{size}']:.2f} ({row[f'speedup_min_{size}']:.2f}–{row[f'speedup_max_{size}']:.2f})"
            for size in BATCHES
        )
        lines.append(f"| `{row['variant']}` | {ratios} | {'yes' if row['wins'] else 'no'} |")
    lines += ["", "What each variant is: " + "; ".join(f"`{row['variant']}`: {row['note']}" for row in rows) + "."]
    return "\n".join(lines)


def run(config: Path, rounds: int, seconds: float, doc: Path | None, out: Path | None) -> list[dict]:
    settings = load_settings(config)
    torch.set_num_threads(1)
    test = split_rows(load_table(settings), "test")
    labels = test[TARGET].to_numpy().astype(np.int64)
    facts_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        network_config = json.loads((settings.paths.model_dir / "config.json").read_text())
        fields = (network_config["categorical"], network_config["numeric"])
        test = test.reindex(columns=[*fields[0], *fields[1]])
        variants = build_variants(settings.paths.model_dir, Path(work), fields)
        scores, probabilities = {}, {}
        for variant in variants:
            scores[variant.name], probabilities[variant.name] = accuracy(variant, test, labels)
        reference = variants[0].name
        deltas = {name: float(np.abs(p - probabilities[reference]).max()) for name, p in probabilities.items()}
        rates = measure(variants, test, rounds, seconds)
        rows = summary(variants, rates, scores, reference, deltas)
    facts = {
        "model_version": network_config["version"],
        "model": str(settings.paths.model_dir),
        "test_rows": len(test),
        "rounds": rounds,
        "seconds": seconds,
        **machine(facts_start),
    }
    publish({"facts": facts, "rows": rows, "rates": rates}, markdown(rows, facts), out, doc, MARKERS)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per variant, batch and round")
    parser.add_argument("--doc", type=Path, default=None, help="write the table between the markers of this page")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/model_variants.json"))
    parser.add_argument("--render", action="store_true", help="only rewrite the table from --out's last run")
    args = parser.parse_args()
    configure_logging()
    if args.render:
        saved = json.loads(args.out.read_text())
        rows = [speed(row, saved["rates"], saved["rows"][0]["variant"]) for row in saved["rows"]]
        table = markdown(rows, saved["facts"])
        if args.doc is not None:
            replace_block(args.doc, MARKERS, table)
        print(table)
        return
    run(args.config, args.rounds, args.seconds, args.doc, args.out)


if __name__ == "__main__":
    main()
