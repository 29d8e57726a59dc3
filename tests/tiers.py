"""The fast tier: every test that needs no trained model, no server and no image.

A test's tier follows from its fixtures. A test is slow when it lives in tests/integration or
tests/image (each starts a server, runs the pipeline or runs an image), or when the fixtures it
uses, directly or through other fixtures, include one that trains a model, starts a server,
builds the plugin or needs a browser or an image (`slow_fixture`). Everything else is fast.

`make test-fast` (TEST_TIER=fast) runs the fast tier only, and there a slow fixture that is
still set up (requested by name at run time, say) fails its test: the tier cannot quietly start
training. Each fast test also has a time limit, which catches a test that trains or starts a
server by calling the code directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

FAST = "fast"
SLOW_FOLDERS = ("integration", "image")
# Generous for one fast test on a busy 2-core machine; training or starting TorchServe takes longer.
FAST_TEST_SECONDS = 20

F = TypeVar("F", bound=Callable[..., Any])
_SLOW: set[str] = set()


def slow_fixture(function: F) -> F:
    """Marks a fixture function as one that makes every test using it slow."""
    _SLOW.add(function.__qualname__ + "@" + function.__module__)
    return function


def _key(definition: Any) -> str:
    function = definition.func
    return function.__qualname__ + "@" + function.__module__


def fast_run() -> bool:
    return os.environ.get("TEST_TIER") == FAST


def is_slow(item: pytest.Item) -> bool:
    if any(part in SLOW_FOLDERS for part in item.path.relative_to(item.config.rootpath).parts[:2]):
        return True
    if item.get_closest_marker("slow"):
        return True
    # The fixture definitions the test will use (the closest one where a name is overridden).
    chosen = getattr(item, "_fixtureinfo", None)
    definitions: Iterable[Any] = (defs[-1] for defs in chosen.name2fixturedefs.values() if defs) if chosen else ()
    return any(_key(definition) in _SLOW for definition in definitions)


def mark_tiers(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks slow tests `slow`; in the fast tier, deselects them."""
    slow = [item for item in items if is_slow(item)]
    for item in slow:
        item.add_marker(pytest.mark.slow)
    if fast_run():
        chosen = set(map(id, slow))
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if id(item) not in chosen]


def refuse_slow_fixture(definition: Any) -> None:
    if fast_run() and _key(definition) in _SLOW:
        pytest.fail(
            f"the fast tier set up the slow fixture '{definition.argname}': the test belongs in the "
            f"whole suite (mark it slow, or give it a fixture that needs no trained model or server)"
        )
