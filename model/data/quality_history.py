"""The quality history: every run's metrics per batch and column, appended to SQLite
(table `column_quality`), so quality can be compared over time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from model.base.sqlite_store import now, sqlite_transaction


def store(metrics: pd.DataFrame, database: Path, source: str, passed: bool) -> None:
    """Append the metrics to the quality history (table `column_quality`)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    # to the microsecond: two runs within a second stay two runs
    stamped = metrics.assign(source=source, passed=passed, measured_at=now("microseconds"))
    with sqlite_transaction(database) as connection:
        stamped.to_sql("column_quality", connection, if_exists="append", index=False)


def history(database: Path) -> pd.DataFrame:
    with sqlite_transaction(database) as connection:
        return pd.read_sql_query("SELECT * FROM column_quality ORDER BY measured_at, batch, column", connection)
