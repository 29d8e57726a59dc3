"""Releasing registry versions to a running server: the registry's commands. Register the
pipeline's model, list, promote, roll back and deploy, in the registry (model/lifecycle/registry.py)
and, with --management, in the running server (model/lifecycle/torchserve_versions.py).

    python -m model.lifecycle.release list
    python -m model.lifecycle.release register                 # the pipeline's current model (params.yaml paths)
    python -m model.lifecycle.release promote 3 [--management http://127.0.0.1:8081] [--force "why"]
    python -m model.lifecycle.release rollback [--management http://127.0.0.1:8081]
    python -m model.lifecycle.release deploy --management http://127.0.0.1:8081
    python -m model.lifecycle.release verify [3]               # the archive is the file registered (SHA-256)

With --management, promote and rollback switch the running server's default version through
its management API (no restart) before the registry records the change. Every version is
checked against the registry first: its promotion allowed (a passed canary, or --force with a
reason) and its archive the file that was registered (SHA-256), before the server sees it.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from typing import Any

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.fingerprint import file_hash
from model.lifecycle.registry import ModelVersion, Registry, RegistryError
from model.lifecycle.torchserve_versions import TorchServeVersions
from model.training.tracking import run_params

log = logging.getLogger(__name__)


def ensure_loaded(registry: Registry, served: TorchServeVersions, version: ModelVersion, workers: int) -> None:
    """The version in the server, from its archive, checked against the registry's hash (also when
    the server holds it already: it is about to be given traffic)."""
    archive = registry.verified_archive(version.version)
    if version.torchserve_version not in served.loaded():
        served.load(archive.name, workers)


def deploy(
    registry: Registry, served: TorchServeVersions, candidate_workers: int = 1, production_workers: int = 2
) -> None:
    """Make the server match the registry: production loaded and default, candidates loaded beside it,
    archived versions unloaded. Nothing restarts; requests keep being answered."""
    production = registry.production()
    if production is None:
        raise RegistryError(f"{registry.name} has no production version: promote one first")
    ensure_loaded(registry, served, production, production_workers)
    served.set_default(production.torchserve_version)
    for candidate in registry.candidates():
        ensure_loaded(registry, served, candidate, candidate_workers)
    keep = {production.torchserve_version, *(c.torchserve_version for c in registry.candidates())}
    for version in served.loaded():
        if version not in keep and version.isdigit():  # only versions the registry made
            served.unload(version)


def promote(
    registry: Registry,
    version: int | str,
    served: TorchServeVersions | None = None,
    detail: dict[str, Any] | None = None,
    workers: int = 2,
    force: str | None = None,
) -> ModelVersion:
    """Check the promotion in the registry, make the server answer with the new default, then
    record it in the registry (which checks again under its lock; the server goes back if it refuses)."""
    target = registry.get(version)
    registry.check_promotion(target.version, force)
    if served is None:
        return registry.promote(target.version, detail, force)
    before = registry.production()
    ensure_loaded(registry, served, target, workers)
    served.set_default(target.torchserve_version)
    try:
        return registry.promote(target.version, detail, force)
    except RegistryError:
        if before is not None:
            served.set_default(before.torchserve_version)
        raise


def rollback(registry: Registry, served: TorchServeVersions | None = None, workers: int = 2) -> ModelVersion:
    """Back to the previous production version, in the server (no restart) and the registry."""
    previous = registry.previous_production()
    if served is not None:
        ensure_loaded(registry, served, previous, workers)
        served.set_default(previous.torchserve_version)
    return registry.rollback()


def register_pipeline_model(settings: Settings, note: str = "") -> ModelVersion:
    """Register what the pipeline last trained (paths.model_dir), with its data hash, params and metrics."""
    metrics = json.loads(settings.paths.metrics.read_text())
    metrics = {key: value for key, value in metrics.items() if key != "history"}
    return Registry.from_settings(settings).register(
        settings.paths.model_dir,
        data_hash=file_hash(settings.paths.processed),
        params=run_params(settings),  # the params the training run was tracked with
        metrics=metrics,
        note=note,
    )


def verify(registry: Registry, version: int | None = None) -> str:
    """A sentence when the version's archive (default: production's) is the file registered; raises otherwise."""
    if version is None:
        production = registry.production()
        if production is None:
            raise RegistryError(f"{registry.name} has no production version: name the version to verify")
        version = production.version
    record = registry.get(version)
    return (
        f"{registry.name} version {record.version}: {registry.verified_archive(version)} has SHA-256 "
        f"{record.sha256}, as registered"
    )


def describe(registry: Registry) -> str:
    lines = [
        "| version | status | model id | created | data hash | archive SHA-256 | test ROC AUC | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in registry.versions():
        auc = v.metrics.get("test", {}).get("roc_auc")
        lines.append(
            f"| {v.version} | {v.status} | {v.model_id} | {v.created} | {v.data_hash[:8]} | "
            f"{v.sha256[:12]} | {'' if auc is None else f'{auc:.4f}'} | {v.note} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version with its status and metrics")
    checking = commands.add_parser(
        "verify", help="check a version's archive against its registered SHA-256 (exit 1 if it changed)"
    )
    checking.add_argument("version", type=int, nargs="?", default=None, help="default: the production version")
    register = commands.add_parser("register", help="register the pipeline's current model as a candidate")
    register.add_argument("--note", default="")
    for name, text in (
        ("promote", "make a version production"),
        ("rollback", "back to the previous production"),
        ("deploy", "load production (default) and candidates into a running TorchServe"),
    ):
        command = commands.add_parser(name, help=text)
        if name == "promote":
            command.add_argument("version", type=int)
            command.add_argument(
                "--force",
                metavar="REASON",
                default=None,
                help="promote a version that has not passed a canary against production (or is "
                "archived); the reason is kept in the registry's history",
            )
        command.add_argument(
            "--management",
            required=name == "deploy",
            help="a running TorchServe's management URL, e.g. http://127.0.0.1:8081",
        )
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    registry = Registry.from_settings(settings)
    served = TorchServeVersions(args.management, registry.name) if getattr(args, "management", None) else None
    try:
        if args.command == "register":
            print(json.dumps(asdict(register_pipeline_model(settings, args.note)), indent=2))
        elif args.command == "promote":
            promote(registry, args.version, served, force=args.force)
        elif args.command == "rollback":
            rollback(registry, served)
        elif args.command == "deploy":
            deploy(registry, TorchServeVersions(args.management, registry.name))  # --management is required
        elif args.command == "verify":
            print(verify(registry, args.version))
            return
    except RegistryError as error:
        parser.exit(1, f"error: {error}\n")
    print(describe(registry))


if __name__ == "__main__":
    main()
