"""The Open Inference Protocol v2 (KServe v2, Triton's HTTP API), JSON and binary data: one input
tensor per request field, shape [n] for n records; the outputs <target>_probability and <target>.

The frontend plugin (frontend/OpenInferenceProtocol.java) forwards metadata and inference
requests here through TorchServe's queue; v2_binary.py reads the binary-data extension. Pure
Python, Python 3.9 compatible.
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union, cast

from .errors import Problem, RequestError, body_error, json_name, short, tensor_error
from .native import Body, check_media_type, parse_json
from .records import ModelSchema, Row
from .v2_binary import binary_elements, split_binary

# What each kind of field accepts.
INTEGERS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
NUMBERS = ("FP64", "FP32") + INTEGERS
REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")


class V2Reply(NamedTuple):
    """What a v2 answer needs from its request."""

    request_id: Optional[str]
    outputs: List[str]


class OpenInference:
    """Reads v2 inference requests into rows and writes v2 answers and metadata."""

    def __init__(self, model: ModelSchema):
        self.model = model
        self.inputs = {
            name: datatypes_of(model.fields[name], name in model.categorical)
            for name in model.categorical + model.numeric
        }
        self.outputs = {f"{model.target}_probability": "FP64", model.target: "BOOL"}

    def metadata(self) -> Dict[str, Any]:
        """Model metadata: one input tensor per request field, shape [-1] (one element per record)."""
        return {
            "name": self.model.name,
            "versions": [self.model.version],
            "platform": "pytorch_torchscript",
            "inputs": [
                {"name": name, "datatype": datatypes[0], "shape": [-1]} for name, datatypes in self.inputs.items()
            ],
            "outputs": [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in self.outputs.items()],
        }

    def parse(
        self, body: Body, content_type: Optional[str], json_length: Union[int, str, None]
    ) -> Tuple[List[Row], V2Reply]:
        """A v2 inference request -> rows (one per element of the input tensors). json_length: the
        Inference-Header-Content-Length header as sent (or its value), None or "" when absent."""
        check_media_type(content_type)
        header, binary = split_binary(body, json_length)
        payload = parse_json(header)
        if not isinstance(payload, dict):
            raise body_error(f"the body must be a JSON object with 'inputs', not {json_name(payload)}")
        for key in payload:
            if key not in REQUEST_KEYS:
                raise tensor_error(
                    key[:64], "is not a key of an inference request; expected " + ", ".join(REQUEST_KEYS), field="body"
                )
        request_id = payload.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise tensor_error("id", f"must be a string, got {json_name(request_id)}", field="body")
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise body_error("'inputs' must be a non-empty list of tensors, one per field: " + ", ".join(self.inputs))
        columns: Dict[str, List[Any]] = {}
        for position, tensor in enumerate(inputs):
            name, column = self.column(position, tensor, binary)
            if name in columns:
                raise tensor_error(name, "is given more than once")
            columns[name] = column
        if binary:
            raise body_error(f"{len(binary)} bytes of binary data follow the JSON but no input claims them")
        sizes = {len(column) for column in columns.values()}
        if len(sizes) > 1:
            shapes = ", ".join(f"{name} [{len(column)}]" for name, column in columns.items())
            raise tensor_error(next(iter(columns)), f"inputs must all have the same shape [n]; got {shapes}")
        rows = sizes.pop()
        if rows > self.model.max_records:
            raise body_error(
                f"{rows} records in one request; at most {self.model.max_records} are accepted",
                status=413,
                kind="too_many_records",
            )
        missing = [name for name in self.model.required if name not in columns]
        problems = [Problem(None, name, "is required but missing", "missing_field") for name in missing]
        records = [{name: column[row] for name, column in columns.items()} for row in range(rows)]
        for row, record in enumerate(records):
            problems.extend(
                Problem(row, field, reason, kind)
                for field, reason, kind in self.model.problems(record)
                if kind != "missing_field"
            )
        if problems:
            raise RequestError(400, problems)
        return self.model.rows(records), V2Reply(request_id, self.requested(payload.get("outputs")))

    def column(self, position: int, tensor: Any, binary: bytearray) -> Tuple[str, List[Any]]:
        """One input tensor's elements, checked against the field it names (binary data consumed)."""
        if not isinstance(tensor, dict):
            raise tensor_error(f"inputs[{position}]", f"must be an object, not {json_name(tensor)}")
        name = tensor.get("name")
        if not isinstance(name, str) or name not in self.inputs:
            raise tensor_error(
                str(name)[:64] if name is not None else f"inputs[{position}]",
                "is not an input of this model; inputs are " + ", ".join(self.inputs),
                kind="unknown_field",
            )
        datatype = tensor.get("datatype")
        accepted = self.inputs[name]
        if datatype not in accepted:
            raise tensor_error(name, f"datatype {str(datatype)[:20]} is not accepted; send {' or '.join(accepted)}")
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != 1
            or not isinstance(shape[0], int)
            or isinstance(shape[0], bool)
            or shape[0] < 1
        ):
            raise tensor_error(name, f"shape must be [n] with n >= 1 records, got {short(shape)}")
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise tensor_error(name, "parameters must be an object")
        if "binary_data_size" in parameters:
            return name, binary_elements(name, datatype, shape[0], parameters["binary_data_size"], binary)
        data = tensor.get("data")
        if not isinstance(data, list):
            raise tensor_error(name, f"data must be a list of {shape[0]} values, got {json_name(data)}")
        if len(data) == shape[0] and any(isinstance(value, list) for value in data):
            data = [value[0] if isinstance(value, list) and len(value) == 1 else value for value in data]
        if len(data) != shape[0]:
            raise tensor_error(name, f"shape [{shape[0]}] does not match the {len(data)} values in data")
        check_elements(name, datatype, data)
        return name, data

    def requested(self, outputs: Any) -> List[str]:
        if outputs is None:
            return list(self.outputs)
        names = [
            output.get("name") if isinstance(output, dict) else None
            for output in (outputs if isinstance(outputs, list) else [None])
        ]
        for name in names:
            if name not in self.outputs:
                raise tensor_error(
                    "outputs",
                    f"{short(name)} is not an output of this model; outputs are " + ", ".join(self.outputs),
                    field="body",
                )
        return cast(List[str], names)  # each one an output's name, checked above

    def answer(self, probabilities: List[float], reply_to: V2Reply) -> str:
        target = self.model.target
        values = {f"{target}_probability": probabilities, target: [p >= self.model.threshold for p in probabilities]}
        answer: Dict[str, Any] = {"model_name": self.model.name, "model_version": self.model.version}
        if reply_to.request_id is not None:
            answer["id"] = reply_to.request_id
        answer["outputs"] = [
            {"name": name, "datatype": self.outputs[name], "shape": [len(probabilities)], "data": values[name]}
            for name in reply_to.outputs
        ]
        return json.dumps(answer)


def datatypes_of(field: Dict[str, Any], categorical: bool) -> Tuple[str, ...]:
    """Accepted tensor datatypes of a field, the one metadata advertises first."""
    if categorical:
        return ("BYTES",)
    types = field["type"] if isinstance(field["type"], list) else [field["type"]]
    # Integer fields also take floats with no fraction: a column with missing values is a float column.
    return INTEGERS + ("FP64", "FP32") if "integer" in types else NUMBERS


def check_elements(name: str, datatype: str, data: List[Any]) -> None:
    """JSON elements must be of the tensor's datatype (null: a missing value, allowed where the field is optional)."""
    for index, value in enumerate(data):
        if value is None:
            continue
        if datatype == "BYTES":
            fits = isinstance(value, str)
        elif datatype in INTEGERS:
            fits = isinstance(value, int) and not isinstance(value, bool)
        else:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not fits:
            raise RequestError(400, [Problem(index, name, f"{short(value)} is not a {datatype} value", "wrong_type")])
