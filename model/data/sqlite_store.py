"""Embedded SQLite stores (quality history, registry, batch store): one transaction helper, one clock."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path


@contextlib.contextmanager
def sqlite_transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """One transaction on an embedded store: committed on success, rolled back on error, closed."""
    connection = sqlite3.connect(path, timeout=30)
    connection.row_factory = sqlite3.Row
    try:
        with connection:
            yield connection
    finally:
        connection.close()


def now(timespec: str = "seconds") -> str:
    """The UTC time every store stamps its rows with (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)
