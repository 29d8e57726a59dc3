"""The model registry: every registered model gets an incrementing version, a record and an
archive, and the registry alone decides which of them may be served.

The record (version, the weights' own id, DVC hash of the training data, params, metrics,
created time, status candidate / production / archived, the archive's SHA-256) and its events
live in an embedded SQLite store beside a copy of the weights; the archive
`<model store>/<name>-v<version>.mar` carries the model name and that version, so one
TorchServe serves several versions side by side at /predictions/<name>/<version>.

The rules, kept here rather than by each caller:
- a version becomes production only as a candidate that passed the registry's gate against the
  current production: a canary for the pipeline's registry (model/lifecycle/canary.py), the
  held-out check for the replay's (model/lifecycle/continuous_training.py). Anything else (no
  gate passed, an archived or rejected version, the first production version) needs an
  override with a reason, which the event log keeps;
- registrations run one at a time (BEGIN IMMEDIATE from reading the last version number to
  writing the new record), so two at once never share a number or each other's files;
- the schema itself holds at most one production row (a partial unique index);
- each archive's SHA-256 is recorded at registration and checked before the archive is
  promoted, loaded into a server or taken for scoring: a file that changed is refused.

Each registry is found here: `Registry.from_settings` (the pipeline's, paths.registry) and
`replay_registry` (the replay's own, under stream.dir); `version_export` gives a version's
model.pt and schema.json, taken from its checked archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.artifact.archive import build_archive
from model.artifact.export import SCHEMA, TORCHSCRIPT
from model.base.sqlite_store import now, sqlite_transaction
from model.config import Settings
from model.training.weights import CONFIG

log = logging.getLogger(__name__)

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
# The event that qualifies a candidate for production, per registry (`gate`).
CANARY, HELD_OUT = "canary", "held-out check"
DATABASE = "registry.sqlite"
# How long a registry operation waits for another one's lock: a registration holds it while it
# packs its archive (seconds, longer on a busy machine).
LOCK_WAIT_SECONDS = 600
# PRAGMA user_version of the store: 0 was before archive hashes and the one-production index.
SCHEMA_VERSION = 1

_VERSIONS = """
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('candidate', 'production', 'archived')),
    created TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    archive TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT ''
)"""
_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES versions(version),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
)"""
_ONE_PRODUCTION = "CREATE UNIQUE INDEX IF NOT EXISTS one_production ON versions (status) WHERE status = 'production'"
_COLUMNS = ("version", "model_id", "status", "created", "data_hash", "params", "metrics", "archive", "note", "sha256")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no such version, nothing to roll back to, a
    version that may not be promoted, an archive that changed)."""


@dataclass(frozen=True)
class ModelVersion:
    version: int
    model_id: str  # the weights' own id from training: <model.version>-<weights hash>
    status: str
    created: str
    data_hash: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    archive: str  # file name in the model store
    note: str
    sha256: str  # of the archive, recorded at registration

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


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Registry:
    """Records, weights and archives of every registered version of one model."""

    def __init__(self, root: Path, model_store: Path, name: str, gate: str = CANARY):
        self.root, self.model_store, self.name, self.gate = Path(root), Path(model_store), name, gate
        self.root.mkdir(parents=True, exist_ok=True)
        self._migrate()

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The pipeline's registry (paths.registry): a candidate reaches production through a canary."""
        return cls(settings.paths.registry, settings.paths.model_store, settings.model.name, gate=CANARY)

    def _db(self, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self.root / DATABASE, immediate=write, timeout=LOCK_WAIT_SECONDS)

    # --- the store's schema ------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the store to SCHEMA_VERSION: a new one is created so; one written before archive
        hashes gets each archive's hash as it is now (its event says so) and, if two versions were
        production, keeps the one promoted last before the schema starts refusing two."""
        with self._db() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
        with self._db(write=True) as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # another process migrated it while this one waited for the lock
            db.execute(_VERSIONS)
            db.execute(_EVENTS)
            if "sha256" not in {row["name"] for row in db.execute("PRAGMA table_info(versions)")}:
                db.execute("ALTER TABLE versions ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''")
            for row in db.execute("SELECT version, archive FROM versions WHERE sha256 = ''").fetchall():
                path = self.model_store / row["archive"]
                if not path.exists():
                    log.warning(
                        "%s version %d: no archive %s to hash; it cannot be served until registered again",
                        self.name,
                        row["version"],
                        path,
                    )
                    continue
                digest = file_sha256(path)
                db.execute("UPDATE versions SET sha256 = ? WHERE version = ?", (digest, row["version"]))
                _event(
                    db,
                    row["version"],
                    "hash recorded",
                    {
                        "sha256": digest,
                        "why": "the registry started keeping archive hashes: this is the archive "
                        "as it was then, not at registration",
                    },
                )
            productions = [
                row["version"]
                for row in db.execute(
                    "SELECT v.version FROM versions v "
                    "LEFT JOIN events e ON e.version = v.version AND e.event = 'promoted' "
                    "WHERE v.status = 'production' GROUP BY v.version ORDER BY MAX(COALESCE(e.id, 0)), v.version"
                )
            ]
            if len(productions) > 1:
                log.warning(
                    "%s versions %s were all production: keeping %d, promoted last",
                    self.name,
                    productions,
                    productions[-1],
                )
            for version in productions[:-1]:
                _set_status(
                    db,
                    version,
                    ARCHIVED,
                    "superseded",
                    {"by": productions[-1], "why": "one production version: the one promoted last is kept"},
                )
            db.execute(_ONE_PRODUCTION)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- reading -----------------------------------------------------------------------------

    def versions(self) -> list[ModelVersion]:
        with self._db() as db:
            return [_version(row) for row in db.execute("SELECT * FROM versions ORDER BY version")]

    def get(self, version: int | str) -> ModelVersion:
        with self._db() as db:
            return self._get(db, version)

    def _get(self, db: sqlite3.Connection, version: int | str) -> ModelVersion:
        row = db.execute("SELECT * FROM versions WHERE version = ?", (int(version),)).fetchone()
        if row is None:
            raise RegistryError(f"{self.name} has no version {version}")
        return _version(row)

    def production(self) -> ModelVersion | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM versions WHERE status = ?", (PRODUCTION,)).fetchone()
        return None if row is None else _version(row)

    def first_production(self) -> ModelVersion | None:
        """The first version ever promoted: the fixed baseline later versions are held against."""
        promoted = [event.version for event in self.events() if event.event == "promoted"]
        return self.get(promoted[0]) if promoted else None

    def candidates(self) -> list[ModelVersion]:
        return [v for v in self.versions() if v.status == CANDIDATE]

    def events(self, version: int | None = None) -> list[Event]:
        args: tuple[int, ...]
        query, args = "SELECT * FROM events ORDER BY id", ()
        if version is not None:
            query, args = "SELECT * FROM events WHERE version = ? ORDER BY id", (int(version),)
        with self._db() as db:
            return [
                Event(row["version"], row["at"], row["event"], json.loads(row["detail"]))
                for row in db.execute(query, args)
            ]

    def weights_dir(self, version: int | str) -> Path:
        """The registry's copy of a version's weights + config.json (for re-packing and warm starts)."""
        return self.root / str(int(version))

    def archive_path(self, version: int | str) -> Path:
        return self.model_store / self.get(version).archive

    def verified_archive(self, version: int | str) -> Path:
        """The version's archive, after checking it is the file registered: what may be served."""
        record = self.get(version)
        path = self.model_store / record.archive
        if not record.sha256:
            raise RegistryError(
                f"{self.name} version {record.version} has no recorded SHA-256 (its archive was "
                "missing when the registry started keeping hashes): register the model again"
            )
        if not path.exists():
            raise RegistryError(f"{self.name} version {record.version}: its archive {path} is missing")
        found = file_sha256(path)
        if found != record.sha256:
            raise RegistryError(
                f"{self.name} version {record.version}: the archive {path} has SHA-256 {found}, "
                f"the registry recorded {record.sha256}; it changed since it was registered and "
                "is not served: restore the file or register the model again"
            )
        return path

    def check_promotion(self, version: int | str, force: str | None = None) -> None:
        """Raise the registry's refusal, if it has one, before anything else changes (a server's
        default): the archive must be the one registered, and the version a candidate that passed
        the gate against production unless `force` gives a reason."""
        self.verified_archive(version)
        with self._db() as db:
            record = self._get(db, version)
            if record.status != PRODUCTION:
                self._override(db, record, force)

    def _override(self, db: sqlite3.Connection, record: ModelVersion, force: str | None) -> dict[str, str] | None:
        """None when the rules allow the promotion; the override's record when `force` answers a
        refusal; raises otherwise."""
        refusal = self._refusal(db, record)
        if refusal is None:
            return None
        reason = (force or "").strip()
        if not reason:
            raise RegistryError(
                f"{self.name} {refusal}: only a candidate that passed a {self.gate} against "
                "production is promoted; to promote it anyway, give the reason (--force 'why'), "
                "which the registry's history keeps"
            )
        return {"reason": reason, "refused": refusal}

    def _refusal(self, db: sqlite3.Connection, record: ModelVersion) -> str | None:
        if record.status != CANDIDATE:
            last = db.execute(
                "SELECT event FROM events WHERE version = ? ORDER BY id DESC LIMIT 1", (record.version,)
            ).fetchone()
            why = f" ({last['event']})" if last is not None and last["event"] != "registered" else ""
            return f"version {record.version} is {record.status}{why}, not a candidate"
        gate = db.execute(
            "SELECT detail FROM events WHERE version = ? AND event = ? ORDER BY id DESC LIMIT 1",
            (record.version, self.gate),
        ).fetchone()
        if gate is None:
            return f"version {record.version} has not passed a {self.gate}"
        detail = json.loads(gate["detail"])
        if not detail.get("passed"):
            return f"version {record.version} failed its {self.gate}"
        current = db.execute("SELECT version FROM versions WHERE status = ?", (PRODUCTION,)).fetchone()
        if current is None or detail.get("against") != current["version"]:
            now_serving = "nothing" if current is None else f"version {current['version']}"
            return (
                f"version {record.version} passed its {self.gate} against version {detail.get('against')}, "
                f"production is {now_serving} now"
            )
        return None

    # --- writing -----------------------------------------------------------------------------

    def register(
        self, model_dir: Path, *, data_hash: str, params: dict[str, Any], metrics: dict[str, Any], note: str = ""
    ) -> ModelVersion:
        """A new candidate: copies the weights, packs <name>-v<N>.mar with version N, records its
        SHA-256. The store's write lock is held from choosing N to writing the record."""
        config = json.loads((Path(model_dir) / CONFIG).read_text())
        model_id = config.get("model_id", config["version"])  # a registry copy keeps the weights' id there
        if config["name"] != self.name:
            raise RegistryError(f"{model_dir} holds model {config['name']!r}, this registry is for {self.name!r}")
        with self._db(write=True) as db:
            version = (db.execute("SELECT MAX(version) FROM versions").fetchone()[0] or 0) + 1
            target = self.weights_dir(version)
            if target.exists():  # left by a registration that failed before its record was written
                shutil.rmtree(target)
            shutil.copytree(model_dir, target)
            # The served version is the registry's; the weights keep their own id beside it.
            (target / CONFIG).write_text(
                json.dumps({**config, "version": str(version), "model_id": model_id}, indent=2) + "\n"
            )
            archive = self._pack(target, version)
            record = ModelVersion(
                version,
                model_id,
                CANDIDATE,
                now(),
                data_hash,
                params,
                metrics,
                archive.name,
                note,
                file_sha256(archive),
            )
            db.execute(
                f"INSERT INTO versions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                (
                    record.version,
                    record.model_id,
                    record.status,
                    record.created,
                    record.data_hash,
                    json.dumps(params),
                    json.dumps(metrics),
                    record.archive,
                    note,
                    record.sha256,
                ),
            )
            _event(
                db,
                version,
                "registered",
                {"model_id": record.model_id, "data_hash": data_hash, "sha256": record.sha256},
            )
        log.info(
            "registered %s version %d (%s) as %s, SHA-256 %s",
            self.name,
            version,
            record.model_id,
            archive,
            record.sha256,
        )
        return record

    def _pack(self, weights: Path, version: int) -> Path:
        with tempfile.TemporaryDirectory() as build:
            packed = build_archive(weights, Path(build))
            self.model_store.mkdir(parents=True, exist_ok=True)
            archive = self.model_store / f"{self.name}-v{version}.mar"
            shutil.move(str(packed), archive)
        return archive

    def promote(
        self, version: int | str, detail: dict[str, Any] | None = None, force: str | None = None
    ) -> ModelVersion:
        """Make `version` production; the production before it is archived. Only a candidate that
        passed the gate against the current production, unless `force` gives the reason to
        override (kept in the promoted event). The archive must be the one registered."""
        self.verified_archive(version)
        detail = dict(detail or {})
        with self._db(write=True) as db:
            promoted = self._get(db, version)
            if promoted.status == PRODUCTION:
                return promoted
            override = self._override(db, promoted, force)
            if override is not None:
                detail["override"] = override
                log.warning(
                    "%s version %d promoted by override (%s): %s",
                    self.name,
                    promoted.version,
                    override["refused"],
                    override["reason"],
                )
            current = db.execute("SELECT version FROM versions WHERE status = ?", (PRODUCTION,)).fetchone()
            if current is not None:
                _set_status(db, current["version"], ARCHIVED, "superseded", {"by": promoted.version})
            _set_status(db, promoted.version, PRODUCTION, "promoted", detail)
        log.info("%s version %d is production", self.name, promoted.version)
        return self.get(version)

    def reject(self, version: int | str, detail: dict[str, Any] | None = None) -> ModelVersion:
        """A candidate that failed its checks: archived, with the reason."""
        with self._db(write=True) as db:
            rejected = self._get(db, version)
            if rejected.status != CANDIDATE:
                raise RegistryError(f"version {rejected.version} is {rejected.status}, not a candidate")
            _set_status(db, rejected.version, ARCHIVED, "rejected", detail or {})
        return self.get(version)

    def record(self, version: int | str, event: str, detail: dict[str, Any]) -> None:
        """An observation about a version (e.g. a canary's measurements and verdict)."""
        with self._db(write=True) as db:
            _event(db, self._get(db, version).version, event, detail)

    def previous_production(self) -> ModelVersion:
        """The version that was production before the current one (the rollback target)."""
        current = self.production()
        if current is None:
            raise RegistryError(f"{self.name} has no production version to roll back from")
        # A version rolled back from (its last event) is never the target: rollbacks do not ping-pong.
        last_event = {e.version: e.event for e in self.events()}
        promotions = [
            e.version
            for e in self.events()
            if e.event == "promoted" and e.version != current.version and last_event[e.version] != "rolled back"
        ]
        if not promotions:
            raise RegistryError(
                f"{self.name} version {current.version} is the first production version: nothing to roll back to"
            )
        return self.get(promotions[-1])

    def rollback(self) -> ModelVersion:
        """The current production is archived and the previous production serves again (its archive
        checked first: it was production before, so no gate is asked of it)."""
        current, previous = self.production(), self.previous_production()
        if current is None:  # another process archived it since previous_production() looked
            raise RegistryError(f"{self.name} has no production version to roll back from")
        self.verified_archive(previous.version)
        with self._db(write=True) as db:
            _set_status(db, current.version, ARCHIVED, "rolled back", {"to": previous.version})
            _set_status(db, previous.version, PRODUCTION, "promoted", {"rollback_from": current.version})
        log.info("%s rolled back from version %d to %d", self.name, current.version, previous.version)
        return self.get(previous.version)


def replay_registry(settings: Settings) -> Registry:
    """The replay's own registry and model store under stream.dir: the replay rewinds to the first
    week of the data, and its versions must never archive the model the pipeline serves. Its gate
    is continuous training's held-out check."""
    return Registry(
        settings.stream.dir / "registry", settings.stream.dir / "model-store", settings.model.name, gate=HELD_OUT
    )


def version_export(settings: Settings, registry: Registry, version: int) -> Path:
    """model.pt + schema.json of a registered version, taken from its checked archive into
    <stream.dir>/exports/<version>: the replay scores with the very file it registered."""
    archive = registry.verified_archive(version)
    target = settings.stream.dir / "exports" / str(int(version))
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as packed:
        for name in (TORCHSCRIPT, SCHEMA):
            (target / name).write_bytes(packed.read(name))
    return target


def _version(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(
        row["version"],
        row["model_id"],
        row["status"],
        row["created"],
        row["data_hash"],
        json.loads(row["params"]),
        json.loads(row["metrics"]),
        row["archive"],
        row["note"],
        row["sha256"],
    )


def _event(db: sqlite3.Connection, version: int, event: str, detail: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO events (version, at, event, detail) VALUES (?, ?, ?, ?)",
        (version, now(), event, json.dumps(detail)),
    )


def _set_status(db: sqlite3.Connection, version: int, status: str, event: str, detail: dict[str, Any]) -> None:
    db.execute("UPDATE versions SET status = ? WHERE version = ?", (status, version))
    _event(db, version, event, detail)
