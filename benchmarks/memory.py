"""Resident memory of a whole service: a process and every descendant, sampled while it works.

TorchServe is a launcher, a JVM frontend and one Python process per worker; what a
container limit must hold is their sum under load, not the frontend's size at rest.
The sum of RSS counts pages the processes share (torch's libraries in every worker)
once per process: an upper bound, the safe side for sizing. The sum of PSS splits
shared pages between their users, which is closer to what the machine really spends.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import psutil

MB = 1024 * 1024


class TreeMemory(NamedTuple):
    rss: int  # bytes, summed over the tree
    pss: int
    pids: frozenset[int]


def process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and its descendants; none once it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_memory(pid: int) -> TreeMemory:
    """Memory of `pid` and its descendants (zeros once it is gone)."""
    processes = process_tree(pid)
    rss = pss = 0
    pids = set()
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:  # a worker that exited between listing and reading
            continue
        rss += info.rss
        pss += info.pss
        pids.add(process.pid)
    return TreeMemory(rss, pss, frozenset(pids))


class ProcessTreeMemory:
    """Samples `tree_memory(pid)` in a background thread for as long as the `with` block runs."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[TreeMemory] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ProcessTreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            sample = tree_memory(self.pid)
            if sample.rss:
                self.samples.append(sample)
            if self._stop.wait(self.interval_s):
                return

    @property
    def pids(self) -> set[int]:
        return set().union(*(sample.pids for sample in self.samples))

    def summary(self) -> dict[str, float]:
        """Peak and mean of the sums, in MB."""
        if not self.samples:
            return {"rss_peak_mb": 0.0, "rss_mean_mb": 0.0, "pss_peak_mb": 0.0}
        rss = [sample.rss / MB for sample in self.samples]
        return {
            "rss_peak_mb": max(rss),
            "rss_mean_mb": sum(rss) / len(rss),
            "pss_peak_mb": max(sample.pss for sample in self.samples) / MB,
        }
