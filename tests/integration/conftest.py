"""Fixtures the registry and canary tests share: a real TorchServe over a test's own registry."""

from __future__ import annotations

import pytest

from harness.torchserve import torchserve
from model.lifecycle.torchserve_versions import TorchServeVersions


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory):
    """TorchServe starting with the production archive of the module's `registry`, as a deployment
    would, and that model's versions in it through the management API. The archive is checked
    against the registry first, as docs/lifecycle.md starts a server on a registry version."""
    archive = registry.verified_archive(registry.production().version)
    with torchserve(
        registry.model_store, tmp_path_factory.mktemp("served"), extra_env={"TS_LOAD_MODELS": archive.name}
    ) as server:
        yield server, TorchServeVersions(server.management_url, registry.name)
