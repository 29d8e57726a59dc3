"""Turn saved weights + config into the served artifact: TorchScript model.pt and schema.json.

Runs with any torch that can script the network, so the serving image re-exports
with its own torch instead of loading TorchScript written by a newer one.
Python 3.9 compatible; needs only torch and safetensors.
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict

import torch

from model import configure_logging
from model.artifact.stable_zip import stable_torchscript
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
    required = [
        name
        for name in config["categorical"] + config["numeric"]
        if {**features["categorical"], **features["numeric"]}[name]["required"]
    ]
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


def export_model(model_dir: Path, export_dir: Path) -> Path:
    """Script the network and write model.pt and schema.json into export_dir."""
    network, config = load_network(Path(model_dir))
    scripted = torch.jit.script(network)
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    schema = json.dumps(input_schema(config), indent=2)
    scripted.save(str(export_dir / TORCHSCRIPT), _extra_files={SCHEMA: schema})
    stable_torchscript(export_dir / TORCHSCRIPT)  # the same bytes from any checkout, venv or user
    (export_dir / SCHEMA).write_text(schema + "\n")
    log.info(
        "exported %s version %s with torch %s to %s", config["name"], config["version"], torch.__version__, export_dir
    )
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
