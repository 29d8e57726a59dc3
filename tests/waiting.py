"""Waiting for what a test can see, with a deadline, rather than for a fixed time (a fixed sleep is
either longer than needed or, on a busy machine, too short), and what a running TorchServe shows
to wait on: the model's description, a counter on its metrics port."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import requests

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """`condition()`'s first true value, looked at every `every` s; an AssertionError naming `what`
    when it is still false after `timeout` s (looked at once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(every)
    return found


def settled(read: Callable[[], T], wanted: T, timeout: float = 10, every: float = 0.05) -> T:
    """`read()` once it equals `wanted`, else its last value after `timeout` s: for an assertion that
    shows what it was (`assert settled(read, 1) == 1`)."""
    deadline = time.monotonic() + timeout
    while (current := read()) != wanted and time.monotonic() < deadline:
        time.sleep(every)
    return current


def described(server, model: str = "mymodel") -> dict:
    """The management API's description of the model: with adaptive batching, the batch size and
    delay in force."""
    return requests.get(f"{server.management_url}/models/{model}", timeout=10).json()[0]


def settled_batch_size(server, wanted: int, timeout: float = 10) -> int:
    return settled(lambda: described(server)["batchSize"], wanted, timeout)


def counted(metrics_url: str, name: str) -> float:
    """The sum of a counter's samples on a TorchServe metrics port."""
    text = requests.get(f"{metrics_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
