"""The run log of `python run.py`: wall time, CPU time and peak memory of every mode's run,
one JSON line each in <stream.dir>/runs.jsonl."""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import psutil

from model.base.sqlite_store import now
from model.config import Settings

log = logging.getLogger(__name__)


RUNS = "runs.jsonl"


@contextlib.contextmanager
def measured(settings: Settings, mode: str) -> Iterator[dict[str, Any]]:
    """Wall time, CPU time and peak resident memory of one run, logged and appended as one JSON
    line to <stream.dir>/runs.jsonl (also when the run fails). `seconds` is the mode's own work,
    `process_seconds` the whole process (interpreter start and imports included). Peak memory is
    the process's high-water mark (getrusage), so it includes the libraries a mode imports; child
    processes (torch-model-archiver, forked from this one) are reported apart. The caller adds its
    result to the yielded dict."""
    started, clock = now(), time.perf_counter()
    entry: dict[str, Any] = {"mode": mode}
    status = "failed"
    try:
        yield entry
        status = "ok"
    finally:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        entry.update(
            {
                "started": started,
                "status": status,
                "seconds": round(time.perf_counter() - clock, 3),
                "process_seconds": round(time.time() - psutil.Process().create_time(), 3),
                "cpu_seconds": round(own.ru_utime + own.ru_stime, 3),
                "peak_rss_mib": round(own.ru_maxrss / 1024, 1),  # Linux reports KiB
                "children_peak_rss_mib": round(children.ru_maxrss / 1024, 1),
            }
        )
        log.info(
            "%s %s in %.1f s (%.1f s with start-up, CPU %.1f s), peak RSS %.0f MiB (child processes %.0f MiB)",
            mode,
            status,
            entry["seconds"],
            entry["process_seconds"],
            entry["cpu_seconds"],
            entry["peak_rss_mib"],
            entry["children_peak_rss_mib"],
        )
        settings.stream.dir.mkdir(parents=True, exist_ok=True)
        with open(settings.stream.dir / RUNS, "a") as runs:
            runs.write(json.dumps(entry, default=str) + "\n")


def runs(settings: Settings) -> pd.DataFrame:
    """Every measured run, oldest first."""
    path = settings.stream.dir / RUNS
    if not path.exists():
        return pd.DataFrame(columns=["mode", "started", "status", "seconds", "cpu_seconds", "peak_rss_mib"])
    return pd.read_json(path, lines=True, dtype=False)
