"""A trained model on disk: safetensors weights and config.json (architecture, preprocessing
constants, features, threshold, version), written by training and read by export and the
warm start.

Python 3.9 compatible: the serving image re-exports model.pt from these files.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Tuple

from safetensors.torch import load_file, save_file

from model.training.network import TabularNet

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def load_network(model_dir: Path) -> Tuple[TabularNet, Dict[str, Any]]:
    config = json.loads((Path(model_dir) / CONFIG).read_text())
    network = TabularNet.from_config(config)
    network.load_state_dict(load_file(str(Path(model_dir) / WEIGHTS)))
    return network.eval(), config


def save_pretrained(network: TabularNet, config: Dict[str, Any], model_dir: Path, base_version: str) -> str:
    """Weights as safetensors + config.json; the version ends in the weights' hash."""
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / WEIGHTS
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    version = f"{base_version}-{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}"
    (model_dir / CONFIG).write_text(json.dumps({**config, "version": version}, indent=2) + "\n")
    return version
