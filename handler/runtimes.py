"""The forward pass the service calls: model.pt in torch (the default), or, with the handler option
`runtime: onnx`, the archive's model.onnx (the same model with its preprocessing,
model/artifact/onnx_export.py) in ONNX Runtime, which must then be installed. Either takes the
category columns and the number rows (NaN for missing) and gives the target's probabilities.
Python 3.9 compatible: it runs in the serving image's worker.
"""

import importlib.util
import os
from typing import Any, Dict, List

import torch

RUNTIMES = ("torchscript", "onnx")
ONNX_MODEL = "model.onnx"


def numeric_tensor(numeric: List[List[float]], fields: int) -> torch.Tensor:
    """The numeric rows as the model's float tensor, [records, numeric fields] even for none."""
    return torch.tensor(numeric, dtype=torch.float32).reshape(len(numeric), fields)


class TorchScriptForward:
    """model.pt, called as the service's Predict."""

    def __init__(self, model: Any, numeric_fields: int):
        self.model, self.numeric_fields = model, numeric_fields

    @torch.inference_mode()
    def __call__(self, categorical: List[List[str]], numeric: List[List[float]]) -> List[float]:
        return self.model(categorical, numeric_tensor(numeric, self.numeric_fields)).tolist()


class OnnxForward:
    """model.onnx in an ONNX Runtime session, called as the service's Predict. One input per
    request field."""

    def __init__(self, path: str, categorical: List[str], numeric: List[str], target: str, threads: int):
        import numpy
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.numpy = numpy
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.categorical, self.numeric = categorical, numeric
        self.output = f"{target}_probability"

    def __call__(self, categorical: List[List[str]], numeric: List[List[float]]) -> List[float]:
        numpy = self.numpy
        feed = {name: numpy.asarray(column, dtype=object) for name, column in zip(self.categorical, categorical)}
        numbers = numpy.asarray(numeric, dtype=numpy.float64).reshape(len(numeric), len(self.numeric))
        feed.update({name: numpy.ascontiguousarray(numbers[:, j]) for j, name in enumerate(self.numeric)})
        return self.session.run([self.output], feed)[0].tolist()


def forward(runtime: str, model: Any, model_dir: str, facts: Dict[str, Any], threads: int) -> Any:
    """The runtime's forward for the loaded model.pt (`model`) and the archive in `model_dir`, or a
    clear refusal to load; `facts`: schema.json's x-model (the fields and the target)."""
    if runtime == "torchscript":
        return TorchScriptForward(model, len(facts["numeric"]))
    if runtime != "onnx":
        raise ValueError(f"handler option runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    path = os.path.join(model_dir, ONNX_MODEL)
    if not os.path.exists(path):
        raise RuntimeError(
            f"runtime onnx: the archive has no {ONNX_MODEL} (pack it with model/artifact/archive.py "
            "from an export that has one)"
        )
    if importlib.util.find_spec("onnxruntime") is None:
        raise RuntimeError("runtime onnx: onnxruntime is not installed in the worker's Python")
    return OnnxForward(path, facts["categorical"], facts["numeric"], facts["target"], threads)
