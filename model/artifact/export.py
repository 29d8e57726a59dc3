"""Turn saved weights + config into the served artifact: TorchScript model.pt and schema.json.

Runs with any torch that can script the network, so the serving image re-exports
with its own torch instead of loading TorchScript written by a newer one.
Python 3.9 compatible; needs only torch and safetensors.
"""

import argparse
import hashlib
import json
import logging
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict

import torch

from model import configure_logging
from model.training.weights import load_network

log = logging.getLogger(__name__)

TORCHSCRIPT = "model.pt"
SCHEMA = "schema.json"




def input_schema(config: Dict[str, Any]) -> Dict[str, Any]:
    """A JSON Schema (2020-12) for one request record, plus the model facts the handler needs."""
    features = config["features"]
    serving = config["serving"]
    properties: Dict[str, Any] = {}
    for name, vocabulary in zip(config["categorical"], config["vocabularies"]):
        spec = features["categorical"][name]
        properties[name] = {
            "type": "string" if spec["required"] else ["string", "null"],
            "minLength": 1 if spec["required"] else 0,
            "maxLength": serving["max_string_length"],
            "description": spec["description"],
            "examples": sorted(value for value in vocabulary if value)[:50],
        }
    for name in config["numeric"]:
        spec = features["numeric"][name]
        kind = "integer" if spec["integer"] else "number"
        properties[name] = {
            "type": kind if spec["required"] else [kind, "null"],
            "minimum": spec["min"],
            "maximum": spec["max"],
            "description": spec["description"],
        }
    required = [name for name in config["categorical"] + config["numeric"]
                if {**features["categorical"], **features["numeric"]}[name]["required"]]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "{} request record".format(config["name"]),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "x-model": {
            "name": config["name"],
            "target": config["target"],
            "version": config["version"],
            "categorical": config["categorical"],
            "numeric": config["numeric"],
            "threshold": serving["threshold"],
            "max_records": serving["max_records"],
        },
    }


def content_serialization_id(path: Path) -> None:
    """torch.jit.save stamps every file with a random id (.data/serialization_id), so equal models
    would give different files. Replace it, in place, by one derived from every other record, so
    the same weights exported twice give the same bytes. (Code records also depend on Python's
    hash seed: the pipeline's export stage runs with PYTHONHASHSEED=0.) The record is stored
    uncompressed and followed by a data descriptor; its CRC-32 is rewritten wherever the zip keeps it."""
    with zipfile.ZipFile(path) as archive:
        records = archive.infolist()
        stamp = next(r for r in records if r.filename.endswith(".data/serialization_id"))
        digest = hashlib.sha256()
        for record in records:
            if record is not stamp:
                digest.update(record.filename.encode() + struct.pack("<I", record.CRC))
    if stamp.compress_type != zipfile.ZIP_STORED:
        raise RuntimeError("unexpected torch.jit.save format: compressed serialization id")
    value = str(int(digest.hexdigest(), 16))[:stamp.file_size].encode().ljust(stamp.file_size, b"0")
    old_crc, new_crc = struct.pack("<I", stamp.CRC), struct.pack("<I", zlib.crc32(value))
    data = bytearray(Path(path).read_bytes())
    start = stamp.header_offset
    name_length, extra_length = struct.unpack("<HH", data[start + 26:start + 30])
    body = start + 30 + name_length + extra_length
    data[body:body + stamp.file_size] = value
    if data[start + 14:start + 18] == old_crc:  # the local header's copy, when not left zero
        data[start + 14:start + 18] = new_crc
    after = body + stamp.file_size  # the data descriptor, with or without its signature
    crc_at = after + 4 if data[after:after + 4] == b"PK\x07\x08" else after
    if data[crc_at:crc_at + 4] == old_crc:
        data[crc_at:crc_at + 4] = new_crc
    name = stamp.filename.encode()
    central = data.find(b"PK\x01\x02", after)
    while central != -1:
        length = struct.unpack("<H", data[central + 28:central + 30])[0]
        if data[central + 46:central + 46 + length] == name:
            data[central + 16:central + 20] = new_crc
            break
        central = data.find(b"PK\x01\x02", central + 46)
    Path(path).write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        if archive.testzip() is not None:
            raise RuntimeError(f"{path}: the rewritten archive does not check out")


def export_model(model_dir: Path, export_dir: Path) -> Path:
    """Script the network and write model.pt and schema.json into export_dir."""
    network, config = load_network(Path(model_dir))
    scripted = torch.jit.script(network)
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    schema = json.dumps(input_schema(config), indent=2)
    scripted.save(str(export_dir / TORCHSCRIPT), _extra_files={SCHEMA: schema})
    content_serialization_id(export_dir / TORCHSCRIPT)
    (export_dir / SCHEMA).write_text(schema + "\n")
    log.info("exported %s version %s with torch %s to %s", config["name"], config["version"],
             torch.__version__, export_dir)
    return export_dir / TORCHSCRIPT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, type=Path, help="weights + config.json")
    parser.add_argument("--export-dir", required=True, type=Path, help="where model.pt and schema.json go")
    args = parser.parse_args()
    configure_logging()
    export_model(args.model_dir, args.export_dir)


if __name__ == "__main__":
    main()
