"""TorchServe as it comes out of the box, serving the same handler and model: the benchmark's reference.

"Defaults" means every setting TorchServe 0.12 chooses itself, except what serving the
same API to the same clients requires:

- per model (the archive's model-config.yaml): batchSize 1, no minWorkers/maxWorkers
  (so default_workers_per_model: one worker per core), maxBatchDelay and
  responseTimeout unset; the worker's Python logging at TorchServe's INFO (the
  handler would otherwise lower it to WARNING);
- server (config.properties): job_queue_size, netty threads, metrics_mode (log),
  JVM options (no vmargs: the JVM's own heap sizing) and request size limits unset;
  TorchServe's own log4j2.xml (debug frontend log, access log and metrics written to
  files under the work directory) instead of docker/log4j2.xml;
- kept from config.properties because they are the API, not tuning: loopback
  addresses on free ports, token authorization off (clients send no token) and
  decode_input_request=false (the handler parses the request bytes itself);
- started like the image starts TorchServe (--foreground, --ncs), the handler's own
  default of one torch thread per worker.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.torchserve import Server, isolated_env, running
from model.artifact.archive import HANDLER, HANDLER_DIR, HANDLER_MODULES, build_archive
from model.artifact.export import export_model
from model.artifact.onnx_export import export_onnx
from model.lifecycle.ports import free_ports

MODEL_CONFIG = """\
# TorchServe's defaults: one request per forward pass; without minWorkers/maxWorkers
# TorchServe starts default_workers_per_model workers, one per core.
batchSize: 1
handler:
  log_level: INFO   # the worker's logging as TorchServe sets it up
"""

PROPERTIES = """\
# TorchServe defaults, plus only what serving the same API to the same clients needs.
inference_address=http://127.0.0.1:{inference}
management_address=http://127.0.0.1:{management}
metrics_address=http://127.0.0.1:{metrics}
grpc_inference_port={grpc_inference}
grpc_management_port={grpc_management}
model_store={store}
load_models={model}.mar
disable_token_authorization=true
decode_input_request=false
"""


def repacked_archive(model_dir: Path, model_store: Path, model_config: str) -> Path:
    """The project's handler and model (model.pt and model.onnx), packed with another model-config.yaml (its text)."""
    with tempfile.TemporaryDirectory() as handler_dir:
        for name in (HANDLER, *HANDLER_MODULES):
            shutil.copy(HANDLER_DIR / name, Path(handler_dir) / name)
        (Path(handler_dir) / "model-config.yaml").write_text(model_config)
        export_dir = Path(handler_dir) / "export"
        export_model(model_dir, export_dir)
        export_onnx(model_dir, export_dir)
        return build_archive(model_dir, model_store, handler_dir=Path(handler_dir), export_dir=export_dir)


def default_archive(model_dir: Path, model_store: Path) -> Path:
    """The project's handler and model, packed with a model-config.yaml that sets nothing but batchSize 1."""
    return repacked_archive(model_dir, model_store, MODEL_CONFIG)


@contextlib.contextmanager
def default_torchserve(model_dir: Path, workdir: Path, model: str, timeout: float = 180) -> Iterator[Server]:
    """Pack the default archive, start TorchServe with defaults, wait until the workers are READY, always stop."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "model-store"
    default_archive(model_dir, store)
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    properties = workdir / "config.properties"
    properties.write_text(
        PROPERTIES.format(
            inference=inference,
            management=management,
            metrics=metrics,
            grpc_inference=grpc_inference,
            grpc_management=grpc_management,
            store=store,
            model=model,
        )
    )
    launcher = Path(sys.executable).parent / "torchserve"
    command = [str(launcher), "--foreground", "--ncs", "--ts-config", str(properties), "--model-store", str(store)]
    with running(
        command, isolated_env(workdir), workdir, (inference, management, metrics), model, timeout, cwd=workdir
    ) as server:
        yield server
