"""One model's versions in a running TorchServe, through its management API: which are loaded,
which is the default, load, set the default, unload."""

from __future__ import annotations

from typing import Any

import requests

from model.lifecycle.registry import RegistryError


class TorchServeVersions:
    """One model's versions in a running TorchServe, through its management API."""

    def __init__(self, management_url: str, name: str, timeout: float = 180):
        self.url, self.name, self.timeout = management_url.rstrip("/"), name, timeout

    def _call(self, method: str, path: str, **params: Any) -> Any:
        reply = requests.request(method, f"{self.url}{path}", params=params or None, timeout=self.timeout)
        if reply.status_code >= 400:
            raise RegistryError(f"TorchServe refused {method} {path}: {reply.status_code} {reply.text.strip()}")
        return reply.json() if reply.content else None

    def loaded(self) -> dict[str, dict[str, Any]]:
        """version -> description ({} when the model is not registered at all)."""
        reply = requests.get(f"{self.url}/models/{self.name}/all", timeout=self.timeout)
        if reply.status_code == 404:
            return {}
        reply.raise_for_status()
        return {str(d["modelVersion"]): d for d in reply.json()}

    def default(self) -> str | None:
        """The version /predictions/<name> answers with."""
        reply = requests.get(f"{self.url}/models/{self.name}", timeout=self.timeout)
        return str(reply.json()[0]["modelVersion"]) if reply.status_code == 200 else None

    def load(self, archive: str, workers: int) -> None:
        """Register an archive from the model store and wait until its workers are up."""
        self._call("POST", "/models", url=archive, initial_workers=workers, synchronous="true")

    def set_default(self, version: str) -> None:
        self._call("PUT", f"/models/{self.name}/{version}/set-default")

    def unload(self, version: str) -> None:
        self._call("DELETE", f"/models/{self.name}/{version}")
