"""The model registry: every registered model gets an incrementing version, a record and an archive.

    python -m model.registry list
    python -m model.registry register                 # the pipeline's current model (params.yaml paths)
    python -m model.registry promote 3 [--management http://127.0.0.1:8081]
    python -m model.registry rollback [--management http://127.0.0.1:8081]
    python -m model.registry deploy --management http://127.0.0.1:8081

The record (version, the weights' own id, DVC hash of the training data, params,
metrics, created time, status candidate / production / archived) lives in an
embedded SQLite store beside a copy of the weights (paths.registry); the archive
`<model store>/<name>-v<version>.mar` carries the model name and that version, so
one TorchServe serves several versions side by side at /predictions/<name>/<version>.
With --management, promote and rollback switch the running server's default version
through its management API (no restart) before the registry records the change.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from model import configure_logging, sqlite_transaction
from model.archive import build_archive
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.export import CONFIG
from model.tracking import run_params

log = logging.getLogger(__name__)

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
DATABASE = "registry.sqlite"

_TABLES = """
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('candidate', 'production', 'archived')),
    created TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    archive TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES versions(version),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no such version, nothing to roll back to)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_hash(path: Path) -> str:
    """The MD5 DVC records for a file output (dvc.lock), so a record names the data it came from."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    version: int
    model_id: str        # the weights' own id from training: <model.version>-<weights hash>
    status: str
    created: str
    data_hash: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    archive: str         # file name in the model store
    note: str

    @property
    def served_as(self) -> str:
        """TorchServe's version string for this model."""
        return str(self.version)


@dataclass(frozen=True)
class Event:
    version: int
    at: str
    event: str
    detail: dict[str, Any]


class Registry:
    """Records, weights and archives of every registered version of one model."""

    def __init__(self, root: Path, model_store: Path, name: str):
        self.root, self.model_store, self.name = Path(root), Path(model_store), name
        self.root.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_TABLES)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(settings.paths.registry, settings.paths.model_store, settings.model.name)

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self.root / DATABASE)

    # --- reading -----------------------------------------------------------------------------

    def versions(self) -> list[ModelVersion]:
        with self._db() as db:
            return [_version(row) for row in db.execute("SELECT * FROM versions ORDER BY version")]

    def get(self, version: int | str) -> ModelVersion:
        with self._db() as db:
            row = db.execute("SELECT * FROM versions WHERE version = ?", (int(version),)).fetchone()
        if row is None:
            raise RegistryError(f"{self.name} has no version {version}")
        return _version(row)

    def production(self) -> ModelVersion | None:
        found = [v for v in self.versions() if v.status == PRODUCTION]
        return found[0] if found else None

    def candidates(self) -> list[ModelVersion]:
        return [v for v in self.versions() if v.status == CANDIDATE]

    def events(self, version: int | None = None) -> list[Event]:
        query, args = "SELECT * FROM events ORDER BY id", ()
        if version is not None:
            query, args = "SELECT * FROM events WHERE version = ? ORDER BY id", (int(version),)
        with self._db() as db:
            return [Event(row["version"], row["at"], row["event"], json.loads(row["detail"]))
                    for row in db.execute(query, args)]

    def weights_dir(self, version: int | str) -> Path:
        """The registry's copy of a version's weights + config.json (for re-packing and warm starts)."""
        return self.root / str(int(version))

    def archive_path(self, version: int | str) -> Path:
        return self.model_store / self.get(version).archive

    # --- writing -----------------------------------------------------------------------------

    def register(self, model_dir: Path, *, data_hash: str, params: dict[str, Any], metrics: dict[str, Any],
                 note: str = "") -> ModelVersion:
        """A new candidate: copies the weights, packs <name>-v<N>.mar with version N."""
        config = json.loads((Path(model_dir) / CONFIG).read_text())
        model_id = config.get("model_id", config["version"])  # a registry copy keeps the weights' id there
        if config["name"] != self.name:
            raise RegistryError(f"{model_dir} holds model {config['name']!r}, this registry is for {self.name!r}")
        with self._db() as db:
            version = (db.execute("SELECT MAX(version) FROM versions").fetchone()[0] or 0) + 1
            target = self.weights_dir(version)
            if target.exists():  # left by a registration that failed before its record was written
                shutil.rmtree(target)
            shutil.copytree(model_dir, target)
            # The served version is the registry's; the weights keep their own id beside it.
            (target / CONFIG).write_text(json.dumps({**config, "version": str(version), "model_id": model_id},
                                                    indent=2) + "\n")
            archive = self._pack(target, version)
            record = ModelVersion(version, model_id, CANDIDATE, now(), data_hash, params, metrics,
                                  archive.name, note)
            db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (record.version, record.model_id, record.status, record.created, record.data_hash,
                        json.dumps(params), json.dumps(metrics), record.archive, note))
            _event(db, version, "registered", {"model_id": record.model_id, "data_hash": data_hash})
        log.info("registered %s version %d (%s) as %s", self.name, version, record.model_id, archive)
        return record

    def _pack(self, weights: Path, version: int) -> Path:
        with tempfile.TemporaryDirectory() as build:
            packed = build_archive(weights, Path(build))
            self.model_store.mkdir(parents=True, exist_ok=True)
            archive = self.model_store / f"{self.name}-v{version}.mar"
            shutil.move(str(packed), archive)
        return archive

    def promote(self, version: int | str, detail: dict[str, Any] | None = None) -> ModelVersion:
        """Make `version` production; the production before it is archived."""
        promoted = self.get(version)
        with self._db() as db:
            current = db.execute("SELECT version FROM versions WHERE status = ?", (PRODUCTION,)).fetchone()
            if current is not None and current["version"] != promoted.version:
                _set_status(db, current["version"], ARCHIVED, "superseded", {"by": promoted.version})
            _set_status(db, promoted.version, PRODUCTION, "promoted", detail or {})
        log.info("%s version %d is production", self.name, promoted.version)
        return self.get(version)

    def reject(self, version: int | str, detail: dict[str, Any] | None = None) -> ModelVersion:
        """A candidate that failed its checks: archived, with the reason."""
        rejected = self.get(version)
        if rejected.status != CANDIDATE:
            raise RegistryError(f"version {rejected.version} is {rejected.status}, not a candidate")
        with self._db() as db:
            _set_status(db, rejected.version, ARCHIVED, "rejected", detail or {})
        return self.get(version)

    def record(self, version: int | str, event: str, detail: dict[str, Any]) -> None:
        """An observation about a version (e.g. a canary's measurements)."""
        with self._db() as db:
            _event(db, self.get(version).version, event, detail)

    def previous_production(self) -> ModelVersion:
        """The version that was production before the current one (the rollback target)."""
        current = self.production()
        if current is None:
            raise RegistryError(f"{self.name} has no production version to roll back from")
        # A version rolled back from (its last event) is never the target: rollbacks do not ping-pong.
        last_event = {e.version: e.event for e in self.events()}
        promotions = [e.version for e in self.events() if e.event == "promoted" and e.version != current.version
                      and last_event[e.version] != "rolled back"]
        if not promotions:
            raise RegistryError(f"{self.name} version {current.version} is the first production version: "
                                "nothing to roll back to")
        return self.get(promotions[-1])

    def rollback(self) -> ModelVersion:
        """The current production is archived and the previous production serves again."""
        current, previous = self.production(), self.previous_production()
        with self._db() as db:
            _set_status(db, current.version, ARCHIVED, "rolled back", {"to": previous.version})
            _set_status(db, previous.version, PRODUCTION, "promoted", {"rollback_from": current.version})
        log.info("%s rolled back from version %d to %d", self.name, current.version, previous.version)
        return self.get(previous.version)


def _version(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(row["version"], row["model_id"], row["status"], row["created"], row["data_hash"],
                        json.loads(row["params"]), json.loads(row["metrics"]), row["archive"], row["note"])


def _event(db: sqlite3.Connection, version: int, event: str, detail: dict[str, Any]) -> None:
    db.execute("INSERT INTO events (version, at, event, detail) VALUES (?, ?, ?, ?)",
               (version, now(), event, json.dumps(detail)))


def _set_status(db: sqlite3.Connection, version: int, status: str, event: str, detail: dict[str, Any]) -> None:
    db.execute("UPDATE versions SET status = ? WHERE version = ?", (status, version))
    _event(db, version, event, detail)


class ServedVersions:
    """One model's versions in a running TorchServe, through its management API."""

    def __init__(self, management_url: str, name: str, timeout: float = 180):
        self.url, self.name, self.timeout = management_url.rstrip("/"), name, timeout

    def _call(self, method: str, path: str, **params: Any) -> Any:
        reply = requests.request(method, f"{self.url}{path}", params=params or None, timeout=self.timeout)
        if reply.status_code >= 400:
            raise RegistryError(f"TorchServe refused {method} {path}: {reply.status_code} {reply.text.strip()}")
        return reply.json() if reply.content else None

    def loaded(self) -> dict[str, dict[str, Any]]:
        """version -> description ({} when the model is not registered at all)."""
        reply = requests.get(f"{self.url}/models/{self.name}/all", timeout=self.timeout)
        if reply.status_code == 404:
            return {}
        reply.raise_for_status()
        return {str(d["modelVersion"]): d for d in reply.json()}

    def default(self) -> str | None:
        """The version /predictions/<name> answers with."""
        reply = requests.get(f"{self.url}/models/{self.name}", timeout=self.timeout)
        return str(reply.json()[0]["modelVersion"]) if reply.status_code == 200 else None

    def load(self, archive: str, workers: int) -> None:
        """Register an archive from the model store and wait until its workers are up."""
        self._call("POST", "/models", url=archive, initial_workers=workers, synchronous="true")

    def set_default(self, version: str) -> None:
        self._call("PUT", f"/models/{self.name}/{version}/set-default")

    def unload(self, version: str) -> None:
        self._call("DELETE", f"/models/{self.name}/{version}")


def ensure_loaded(served: ServedVersions, version: ModelVersion, workers: int) -> None:
    if version.served_as not in served.loaded():
        served.load(version.archive, workers)


def deploy(registry: Registry, served: ServedVersions, candidate_workers: int = 1, production_workers: int = 2
           ) -> None:
    """Make the server match the registry: production loaded and default, candidates loaded beside it,
    archived versions unloaded. Nothing restarts; requests keep being answered."""
    production = registry.production()
    if production is None:
        raise RegistryError(f"{registry.name} has no production version: promote one first")
    ensure_loaded(served, production, production_workers)
    served.set_default(production.served_as)
    for candidate in registry.candidates():
        ensure_loaded(served, candidate, candidate_workers)
    keep = {production.served_as, *(c.served_as for c in registry.candidates())}
    for version in served.loaded():
        if version not in keep and version.isdigit():  # only versions the registry made
            served.unload(version)


def promote(registry: Registry, version: int | str, served: ServedVersions | None = None,
            detail: dict[str, Any] | None = None, workers: int = 2) -> ModelVersion:
    """Promote in the server first (it must answer with the new default), then in the registry."""
    target = registry.get(version)
    if served is not None:
        ensure_loaded(served, target, workers)
        served.set_default(target.served_as)
    return registry.promote(target.version, detail)


def rollback(registry: Registry, served: ServedVersions | None = None, workers: int = 2) -> ModelVersion:
    """Back to the previous production version, in the server (no restart) and the registry."""
    previous = registry.previous_production()
    if served is not None:
        ensure_loaded(served, previous, workers)
        served.set_default(previous.served_as)
    return registry.rollback()


def register_pipeline_model(settings: Settings, note: str = "") -> ModelVersion:
    """Register what the pipeline last trained (paths.model_dir), with its data hash, params and metrics."""
    metrics = json.loads(settings.paths.metrics.read_text())
    metrics = {key: value for key, value in metrics.items() if key != "history"}
    return Registry.from_settings(settings).register(
        settings.paths.model_dir, data_hash=file_hash(settings.paths.processed),
        params=run_params(settings),  # the params the training run was tracked with
        metrics=metrics, note=note)


def describe(registry: Registry) -> str:
    lines = ["| version | status | model id | created | data hash | test ROC AUC | note |",
             "|---|---|---|---|---|---|---|"]
    for v in registry.versions():
        auc = v.metrics.get("test", {}).get("roc_auc")
        lines.append(f"| {v.version} | {v.status} | {v.model_id} | {v.created} | {v.data_hash[:8]} | "
                     f"{'' if auc is None else f'{auc:.4f}'} | {v.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version with its status and metrics")
    register = commands.add_parser("register", help="register the pipeline's current model as a candidate")
    register.add_argument("--note", default="")
    for name, text in (("promote", "make a version production"), ("rollback", "back to the previous production"),
                       ("deploy", "load production (default) and candidates into a running TorchServe")):
        command = commands.add_parser(name, help=text)
        if name == "promote":
            command.add_argument("version", type=int)
        command.add_argument("--management", required=name == "deploy",
                             help="a running TorchServe's management URL, e.g. http://127.0.0.1:8081")
    args = parser.parse_args()
    configure_logging()
    settings = load_settings(args.config)
    registry = Registry.from_settings(settings)
    served = ServedVersions(args.management, registry.name) if getattr(args, "management", None) else None
    try:
        if args.command == "register":
            print(json.dumps(asdict(register_pipeline_model(settings, args.note)), indent=2))
        elif args.command == "promote":
            promote(registry, args.version, served)
        elif args.command == "rollback":
            rollback(registry, served)
        elif args.command == "deploy":
            deploy(registry, served)
    except RegistryError as error:
        parser.exit(1, f"error: {error}\n")
    print(describe(registry))


if __name__ == "__main__":
    main()
