"""model.onnx: the served network as an ONNX graph with its preprocessing inside, for servers
without torch (ONNX Runtime, Triton, KServe, MLServer).

    python -m model.artifact.onnx_export --model-dir artifacts/model --export-dir artifacts/export

The graph takes one input per request field, named as the field: a string tensor [records] per
category ("" when missing) and a float64 tensor [records] per number (NaN when missing), the
tensors of the v2 protocol. Everything model.pt does between those values and the MLP is
inside: the vocabulary lookups (`ai.onnx.ml` LabelEncoder, unknown categories to the unknown
row), imputation, missing-value indicators, standardization, sine/cosine of periodic numbers,
the embeddings. It answers `<target>_probability` (float64) and `<target>` (probability >=
the threshold training chose, as the handler decides). `schema.json` rides in its metadata.

The graph is written node by node from the saved weights, not traced: the file's bytes depend
on the weights and this code only (no exporter version, no random names), so every checkout
writes the same model.onnx.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from model import configure_logging
from model.artifact.export import input_schema
from model.artifact.predict import ONNX_MODEL, ONNX_SCHEMA
from model.training.network import UNKNOWN, TabularNet
from model.training.weights import load_network

log = logging.getLogger(__name__)

# ONNX Runtime 1.15 and later run IR 9 / opset 18; the image generation's Python 3.9 has them.
IR_VERSION = 9
OPSET = 18
ML_OPSET = 3  # LabelEncoder-2: string keys to int64 values
RECORDS = "records"  # the batch dimension's name


class GraphBuilder:
    """Nodes and initializers with names in the order they are made."""

    def __init__(self) -> None:
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: List[str], output: str, domain: str = "", **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attributes))
        return output


def as_array(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def category_part(graph: GraphBuilder, network: TabularNet) -> str:
    """Each field's strings -> its vocabulary rows -> embeddings (or one-hot columns)."""
    table = graph.constant("embedding", as_array(network.embedding.weight).astype(np.float32))
    offsets = as_array(network.offsets)
    looked_up = []
    for j, (name, vocabulary) in enumerate(zip(network.categorical, network.vocabularies)):
        keys = sorted(vocabulary)
        index = graph.node(
            "LabelEncoder",
            [name],
            f"{name}.index",
            domain="ai.onnx.ml",
            keys_strings=keys,
            values_int64s=[vocabulary[key] for key in keys],
            default_int64=UNKNOWN,
        )
        row = graph.node(
            "Add", [index, graph.constant(f"{name}.offset", np.array(offsets[j], dtype=np.int64))], f"{name}.row"
        )
        looked_up.append(graph.node("Gather", [table, row], f"{name}.embedded", axis=0))
    if network.one_hot:  # each field's rows are disjoint columns of the identity: the sum concatenates
        return graph.node("Sum", looked_up, "categories")
    return graph.node("Concat", looked_up, "categories", axis=1)


def numeric_part(graph: GraphBuilder, network: TabularNet) -> List[str]:
    """The numbers as features() makes them: scaled, sine and cosine of periodic ones, indicators."""
    axis = graph.constant("axis.1", np.array([1], dtype=np.int64))
    columns = [
        graph.node(
            "Unsqueeze", [graph.node("Cast", [name], f"{name}.float", to=TensorProto.FLOAT), axis], f"{name}.column"
        )
        for name in network.numeric
    ]
    numbers = graph.node("Concat", columns, "numbers", axis=1)
    missing = graph.node(
        "Or",
        [graph.node("IsNaN", [numbers], "numbers.nan"), graph.node("IsInf", [numbers], "numbers.inf")],
        "numbers.missing",
    )
    filled = graph.node("Where", [missing, graph.constant("fill", as_array(network.fill)), numbers], "numbers.filled")
    scaled = graph.node(
        "Div",
        [
            graph.node("Sub", [filled, graph.constant("mean", as_array(network.mean))], "numbers.centred"),
            graph.constant("std", as_array(network.std)),
        ],
        "numbers.scaled",
    )
    linear = graph.node(
        "Gather", [scaled, graph.constant("linear_index", as_array(network.linear_index))], "numbers.linear", axis=1
    )
    periodic = graph.node(
        "Gather", [filled, graph.constant("cyclic_index", as_array(network.cyclic_index))], "numbers.periodic", axis=1
    )
    angle = graph.node("Mul", [periodic, graph.constant("angular", as_array(network.angular))], "numbers.angle")
    parts = [linear, graph.node("Sin", [angle], "numbers.sin"), graph.node("Cos", [angle], "numbers.cos")]
    if network.indicators:
        parts.append(graph.node("Cast", [missing], "numbers.indicators", to=TensorProto.FLOAT))
    return parts


def mlp_part(graph: GraphBuilder, network: TabularNet, features: str) -> str:
    """The MLP in evaluation mode (dropout is the identity): Gemm and Relu, one logit per record."""
    hidden = features
    layers = [layer for layer in network.mlp if isinstance(layer, nn.Linear)]
    for k, layer in enumerate(layers):
        weight = graph.constant(f"mlp.{k}.weight", as_array(layer.weight))
        bias = graph.constant(f"mlp.{k}.bias", as_array(layer.bias))
        hidden = graph.node("Gemm", [hidden, weight, bias], f"mlp.{k}", transB=1)
        if k < len(layers) - 1:
            hidden = graph.node("Relu", [hidden], f"mlp.{k}.relu")
    return hidden


def onnx_graph(network: TabularNet, config: Dict[str, Any]) -> onnx.ModelProto:
    """The whole model: request fields in, probability and decision out."""
    graph = GraphBuilder()
    parts = numeric_part(graph, network)
    if network.categorical:
        parts.append(category_part(graph, network))
    features = graph.node("Concat", parts, "features", axis=1)
    logit = mlp_part(graph, network, features)
    flat = graph.node(
        "Reshape",
        [
            graph.node("Sigmoid", [logit], "probability.column"),
            graph.constant("shape.records", np.array([-1], dtype=np.int64)),
        ],
        "probability.float",
    )
    target = config["target"]
    probability = graph.node("Cast", [flat], f"{target}_probability", to=TensorProto.DOUBLE)
    threshold = graph.constant("threshold", np.array(config["serving"]["threshold"], dtype=np.float64))
    graph.node("GreaterOrEqual", [probability, threshold], target)

    inputs = [helper.make_tensor_value_info(name, TensorProto.STRING, [RECORDS]) for name in network.categorical] + [
        helper.make_tensor_value_info(name, TensorProto.DOUBLE, [RECORDS]) for name in network.numeric
    ]
    outputs = [
        helper.make_tensor_value_info(f"{target}_probability", TensorProto.DOUBLE, [RECORDS]),
        helper.make_tensor_value_info(target, TensorProto.BOOL, [RECORDS]),
    ]
    body = helper.make_graph(graph.nodes, config["name"], inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    model = helper.make_model(
        body,
        producer_name=config["name"],
        model_version=0,
        ir_version=IR_VERSION,
        opset_imports=opsets,
        doc_string="{} version {}: request fields in, {}_probability and {} out".format(
            config["name"], config["version"], target, target
        ),
    )
    schema = json.dumps(input_schema(config), indent=2)
    helper.set_model_props(model, {"version": config["version"], ONNX_SCHEMA: schema})
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(model_dir: Path, export_dir: Path) -> Path:
    """Write model.onnx from the saved weights into export_dir."""
    network, config = load_network(Path(model_dir))
    model = onnx_graph(network, config)
    path = Path(export_dir) / ONNX_MODEL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    log.info(
        "exported %s version %s as ONNX (IR %d, opset %d) to %s",
        config["name"],
        config["version"],
        IR_VERSION,
        OPSET,
        path,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, type=Path, help="weights + config.json")
    parser.add_argument("--export-dir", required=True, type=Path, help="where model.onnx goes")
    args = parser.parse_args()
    configure_logging()
    export_onnx(args.model_dir, args.export_dir)


if __name__ == "__main__":
    main()
