"""mymodel: predict before departure whether a flight from New York arrives late."""

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Iterator


def configure_logging(verbose: bool = False) -> None:
    """One log format for every command-line job; --verbose shows debug lines."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
