"""Embedded SQLite stores (quality history, registry, batch store): one transaction helper, one clock."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path


@contextlib.contextmanager
def sqlite_transaction(path: Path, immediate: bool = False, timeout: float = 30) -> Iterator[sqlite3.Connection]:
    """One transaction on an embedded store: committed on success, rolled back on error, closed.

    With `immediate`, the transaction takes the store's write lock before its first statement
    (BEGIN IMMEDIATE), so nothing another process writes can come between what it reads and
    what it writes: read-then-write steps run one after another. A transaction waits up to
    `timeout` seconds for a lock another one holds."""
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None if immediate else "DEFERRED")
    connection.row_factory = sqlite3.Row
    try:
        if not immediate:
            with connection:
                yield connection
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        connection.close()


def now(timespec: str = "seconds") -> str:
    """The UTC time every store stamps its rows with (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)
