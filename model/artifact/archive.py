"""Pack the served model: export model.pt with the torch at hand, then torch-model-archiver.

The archive holds model.pt, schema.json, model.onnx where the export has one (the same model for
ONNX Runtime, which the handler runs with its option `runtime: onnx`), model-config.yaml, the
handler package as the folder handler/ (HANDLER_MODULES) and, beside it, the entry module
TorchServe imports (HANDLER); it is named after the model with the version from its config.
Python 3.9 compatible: the serving image builds its archive with this module.
"""

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from model import configure_logging
from model.artifact.export import SCHEMA, TORCHSCRIPT, export_model
from model.artifact.stable_zip import stable_archive
from model.training.weights import CONFIG

log = logging.getLogger(__name__)

ONNX_MODEL = "model.onnx"  # model.artifact.predict.ONNX_MODEL, which this module cannot import in the image

HANDLER_DIR = Path(__file__).resolve().parents[2] / "handler"
# TorchServe's entry module, packed at the archive's top, and the handler package's modules,
# packed in the folder handler/ beside it (they import one another relatively).
HANDLER = "torchserve_entry.py"
HANDLER_PACKAGE = "handler"
HANDLER_MODULES = (
    "__init__.py",
    "handler.py",
    "runtimes.py",
    "explanations.py",
    "service.py",
    "errors.py",
    "records.py",
    "native.py",
    "v2.py",
    "v2_binary.py",
    "typed_records.py",
    "request_log.py",
    "metrics.py",
)


def archiver_command() -> str:
    """torch-model-archiver beside the running interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "torch-model-archiver"
    found = str(beside) if beside.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise RuntimeError("torch-model-archiver is not installed: run `make setup`")
    return found


def build_archive(
    model_dir: Path, model_store: Path, handler_dir: Path = HANDLER_DIR, export_dir: Optional[Path] = None
) -> Path:
    """Pack <name>.mar. model.pt and model.onnx come from `export_dir` (the pipeline's export stage)
    or, without it, model.pt alone is exported here from the weights with the torch at hand (the
    serving image's build, whose Python has no onnx)."""
    config = json.loads((Path(model_dir) / CONFIG).read_text())
    model_store = Path(model_store)
    model_store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as build:
        if export_dir is None:
            export_model(Path(model_dir), Path(build))
        else:
            exported = json.loads((Path(export_dir) / SCHEMA).read_text())["x-model"]["version"]
            if exported != config["version"]:
                raise RuntimeError(
                    "{} holds version {}, {} version {}: run the export stage".format(
                        export_dir, exported, model_dir, config["version"]
                    )
                )
            for name in (TORCHSCRIPT, SCHEMA, ONNX_MODEL):
                if name != ONNX_MODEL or (Path(export_dir) / name).exists():
                    shutil.copyfile(Path(export_dir) / name, Path(build) / name)
        # A folder given to --extra-files has its contents packed at the archive's top.
        package = Path(build) / "package" / HANDLER_PACKAGE
        package.mkdir(parents=True)
        for name in HANDLER_MODULES:
            shutil.copyfile(Path(handler_dir) / name, package / name)
        subprocess.run(
            [
                archiver_command(),
                "--model-name",
                config["name"],
                "--version",
                config["version"],
                "--serialized-file",
                str(Path(build) / TORCHSCRIPT),
                "--handler",
                str(handler_dir / HANDLER),
                "--extra-files",
                ",".join(
                    [str(Path(build) / name) for name in (SCHEMA, ONNX_MODEL) if (Path(build) / name).exists()]
                    + [str(package.parent)]
                ),
                "--config-file",
                str(handler_dir / "model-config.yaml"),
                "--export-path",
                str(model_store),
                "--force",
            ],
            check=True,
        )
    archive = model_store / "{}.mar".format(config["name"])
    stable_archive(archive)  # no build time or file times: the same bytes for the same content
    log.info("packed %s version %s into %s", config["name"], config["version"], archive)
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, type=Path, help="weights + config.json from training")
    parser.add_argument("--model-store", required=True, type=Path, help="where <name>.mar is written")
    parser.add_argument(
        "--export-dir",
        type=Path,
        default=None,
        help="pack this model.pt + schema.json (default: export from the weights now)",
    )
    args = parser.parse_args()
    configure_logging()
    build_archive(args.model_dir, args.model_store, export_dir=args.export_dir)


if __name__ == "__main__":
    main()
