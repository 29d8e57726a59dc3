"""The DVC pipeline for any params file: what `make <target> CONFIG=configs/<name>.yaml` runs.

    python -m model.lifecycle.pipeline --config configs/loans.yaml archive     # dvc repro up to archive
    python -m model.lifecycle.pipeline --config configs/loans.yaml --get model.name

dvc.yaml reads params.yaml, and DVC has no switch for another params file. For another one this
writes, into pipelines/<name>/, the params file resolved (its `base:` merged) as
params.yaml and a dvc.yaml with dvc.yaml's stages reading it (each run from the checkout), then
runs `dvc repro` on that: the same stages and commands, what is up to date skipped, a dvc.lock of
its own, and every output where the params file's own paths put it. A params file whose paths
are the default pipeline's is refused, so it can never overwrite the default model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from model.config import DEFAULT_CONFIG, ROOT, load_settings, read_params

# Not git-ignored: DVC refuses a dvc.yaml git ignores, and the dvc.lock beside it is the record of
# what was trained, to commit with the params file as dvc.lock is for the default pipeline.
PIPELINES = ROOT / "pipelines"
DVC_FILE = ROOT / "dvc.yaml"
# dvc.yaml's commands name the params file like this; the copy names the resolved one instead.
CONFIG_ARGUMENT = "--config params.yaml"


class PipelineError(ValueError):
    """The params file cannot get a pipeline of its own."""


def is_default(config: Path) -> bool:
    return Path(config).resolve() == DEFAULT_CONFIG.resolve()


def shared_paths(config: Path) -> list[str]:
    """The params file's paths that are, hold or sit inside one of the default pipeline's."""
    own, default = load_settings(config).paths, load_settings(DEFAULT_CONFIG).paths
    theirs = [getattr(default, name) for name in type(default).model_fields]
    return [name for name in type(own).model_fields if any(_overlap(getattr(own, name), path) for path in theirs)]


def _overlap(one: Path, other: Path) -> bool:
    return one == other or one in other.parents or other in one.parents


def pipeline_stages(resolved: str) -> dict[str, Any]:
    """dvc.yaml with every stage reading `resolved` (a path from the checkout) instead of params.yaml."""
    source = yaml.safe_load(DVC_FILE.read_text())
    stages = {}
    for name, stage in source["stages"].items():
        stage = dict(stage)
        stage["cmd"] = stage["cmd"].replace(CONFIG_ARGUMENT, f"--config {resolved}")
        stage["wdir"] = "WDIR"  # replaced by the caller: the checkout, seen from the copy's folder
        if "params" in stage:
            stage["params"] = [{resolved: list(stage["params"])}]
        stages[name] = stage
    return {"vars": source.get("vars", []), "stages": stages}


def write_pipeline(config: Path) -> Path:
    """The copy of dvc.yaml for `config` (written when it changed); returns its path."""
    config = Path(config)
    shared = shared_paths(config)
    if shared:
        raise PipelineError(
            f"{config}: paths {', '.join(shared)} are (or overlap) the default pipeline's (params.yaml): give the "
            f"params file "
            f"paths of its own, as configs/synthetic.yaml does, so its outputs never overwrite the default model"
        )
    folder = PIPELINES / config.stem
    folder.mkdir(parents=True, exist_ok=True)
    params, dvc_file = folder / "params.yaml", folder / "dvc.yaml"
    resolved = params.relative_to(ROOT).as_posix()
    pipeline = pipeline_stages(resolved)
    wdir = os.path.relpath(ROOT, folder)
    for stage in pipeline["stages"].values():
        stage["wdir"] = wdir
    header = f"# Written from {config} and dvc.yaml by model/lifecycle/pipeline.py: edit those, not this.\n"
    _write_if_changed(params, header + yaml.safe_dump(read_params(config), sort_keys=False))
    _write_if_changed(dvc_file, header + yaml.safe_dump(pipeline, sort_keys=False))
    return dvc_file


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def repro(config: Path, stages: list[str]) -> int:
    """`dvc repro` of the stages (and what they need) for `config`; the exit status."""
    dvc = Path(sys.executable).parent / "dvc"
    command = str(dvc) if dvc.exists() else "dvc"
    if is_default(config):
        targets = stages
    else:
        dvc_file = write_pipeline(config).relative_to(ROOT).as_posix()
        targets = [f"{dvc_file}:{stage}" for stage in stages]
    print(f"{command} repro {' '.join(targets)}", file=sys.stderr, flush=True)
    return subprocess.run([command, "repro", *targets], cwd=ROOT).returncode


def setting(config: Path, key: str) -> str:
    """A dotted key of the params file as validated, e.g. model.name or paths.model_store."""
    value: Any = load_settings(config)
    for part in key.split("."):
        value = getattr(value, part)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--get", metavar="KEY", help="print one setting (e.g. model.name) and exit")
    parser.add_argument("stages", nargs="*", help="dvc.yaml's stages to bring up to date (with what they need)")
    args = parser.parse_args(argv)
    try:
        if args.get:
            print(setting(args.config, args.get))
            return 0
        if not args.stages:
            parser.error("name at least one stage, e.g. archive")
        return repro(args.config, args.stages)
    except (PipelineError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
