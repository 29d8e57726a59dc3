"""The Open Inference Protocol's binary-data extension: Inference-Header-Content-Length bytes of
JSON, then the tensors' raw bytes, each input taking binary_data_size of them (little-endian,
row-major; BYTES elements length-prefixed). Pure Python, Python 3.9 compatible.
"""

import math
import re
import struct
from typing import Any, List, Tuple, Union

from .errors import Problem, RequestError, short, tensor_error
from .native import Body

# The struct format of one element of each numeric datatype (little-endian).
BINARY_FORMATS = {
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP32": "f",
    "FP64": "d",
}
# The binary-data extension's header: the JSON's length in bytes. A body is at most a few MiB, so
# ten ASCII digits are plenty; str.isdigit would take "²" and int() would take " 7" or "+7".
JSON_LENGTH_HEADER = "Inference-Header-Content-Length"
JSON_LENGTH = re.compile(r"[0-9]{1,10}")


def split_binary(body: Body, json_length: Union[int, str, None]) -> Tuple[Body, bytearray]:
    """The binary-data extension: the JSON header's bytes, then the tensors' raw bytes."""
    if json_length is None or json_length == "":
        return body, bytearray()
    if isinstance(json_length, str):
        if not JSON_LENGTH.fullmatch(json_length):
            raise header_error(f"{short(json_length)} is not a length in bytes (1 to 10 digits 0-9)")
        json_length = int(json_length)
    size = len(body) if isinstance(body, (bytes, bytearray)) else 0
    if not isinstance(body, (bytes, bytearray)) or not 0 < json_length <= size:
        raise header_error(f"{json_length} does not fit a body of {size} bytes")
    return bytes(body[:json_length]), bytearray(body[json_length:])


def header_error(reason: str) -> RequestError:
    return RequestError(400, [Problem(None, JSON_LENGTH_HEADER, reason, "header")])


def binary_elements(name: str, datatype: str, count: int, size: Any, binary: bytearray) -> List[Any]:
    """Take one tensor's elements from the front of the binary data (little-endian, row-major)."""
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
        raise tensor_error(name, f"binary_data_size {short(size)} does not fit the {len(binary)} bytes left")
    chunk = bytes(binary[:size])
    del binary[:size]
    if datatype == "BYTES":  # each element: a 4-byte length, then that many bytes
        values, offset = [], 0
        while offset + 4 <= len(chunk):
            (length,) = struct.unpack_from("<I", chunk, offset)
            value = chunk[offset + 4 : offset + 4 + length]
            if len(value) != length:
                break
            try:
                values.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise tensor_error(name, f"element {len(values)} is not UTF-8 text") from None
            offset += 4 + length
        if offset != len(chunk) or len(values) != count:
            raise tensor_error(name, f"binary data does not hold {count} length-prefixed strings")
        return values
    width = struct.calcsize("<" + BINARY_FORMATS[datatype])
    if size != width * count:
        raise tensor_error(name, f"binary_data_size {size} is not {count} x {width} bytes of {datatype}")
    elements = struct.unpack(f"<{count}{BINARY_FORMATS[datatype]}", chunk)
    # NaN is how binary data says "missing" (JSON data says null); infinities are refused by the schema's bounds
    return [None if isinstance(value, float) and math.isnan(value) else value for value in elements]
