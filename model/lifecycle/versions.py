"""The registry's store: every registered model gets an incrementing version, a record and an
archive. The record (version, the weights' own id, DVC hash of the training data, params,
metrics, created time, status candidate / production / archived) and its events live in an
embedded SQLite store beside a copy of the weights (paths.registry); the archive
`<model store>/<name>-v<version>.mar` carries the model name and that version, so one
TorchServe serves several versions side by side at /predictions/<name>/<version>.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.artifact.archive import build_archive
from model.config import Settings
from model.data.sqlite_store import now, sqlite_transaction
from model.training.weights import CONFIG

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
    def torchserve_version(self) -> str:
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
