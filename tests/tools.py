"""Outside tools the tests run for real (container engines, Prometheus, Chromium): where one is missing,
a test is skipped with the reason on a developer's machine and fails in CI, where `make test`
installs it."""

from __future__ import annotations

import os
import shutil

import pytest


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (in CI `make test` provides it)")
    pytest.skip(reason)


def monitoring_tool(name: str) -> str:
    """The path of promtool or prometheus (tests/system-tools.sh installs both)."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is missing: `make monitoring-tools` (tests/system-tools.sh) installs it")
    return found
