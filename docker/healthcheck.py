"""Exit 0 when the model has a READY worker, 1 otherwise: the image's HEALTHCHECK and the
Kubernetes readiness probe.

`/ping` answers Healthy even while workers crash-loop, so readiness asks the
management API about the model itself. Ready means at least one worker of the model's
default version is READY (of every model the server loaded, when none is named): the
replica answers predictions, more slowly while another worker restarts. Requiring every
worker would take a replica out of the Service for each worker restart, and the same bad
request sent to every replica would empty the Service; a restart is an alert instead
(deploy/prometheus/alerts.yml, MymodelWorkerRestarts). Liveness is separate: /ping
(a live frontend) in the Kubernetes manifests. A server that is stopping
(docker/entrypoint.sh leaves a draining mark in the temporary directory) is not ready, so
load balancers stop sending it requests before it stops serving them.

`--wait-loaded` is the entrypoint's startup watcher: it waits until the workers are READY
(exit 0), and when the frontend answers but does not know the model (it failed to load) or
the workers are not READY in time, it says so and sends the entrypoint SIGUSR1, which then
stops with exit 1. Python 3.9, standard library only.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

DRAINING_MARK = ".mymodel.draining"
# Where docker/entrypoint.sh notes TorchServe's own management address when it is not the
# configured one (behind docker/management_gateway.py).
MANAGEMENT_NOTE = ".mymodel.management"
DEFAULT_MANAGEMENT = "http://127.0.0.1:8081"


def temp_dir() -> Path:
    """The temporary directory as docker/entrypoint.sh picks it (TMPDIR, TEMP, TMP, /tmp)."""
    return Path(next((os.environ[key] for key in ("TMPDIR", "TEMP", "TMP") if os.environ.get(key)), "/tmp"))


def management_address() -> str:
    note = temp_dir() / MANAGEMENT_NOTE
    return note.read_text().strip() if note.exists() else DEFAULT_MANAGEMENT


def describe(management_url: str, model: str, timeout: float = 2.0) -> Optional[List[Dict[str, Any]]]:
    """The management API's description of the model ([] when it does not know the model,
    None when it cannot be reached)."""
    try:
        with urllib.request.urlopen("{}/models/{}".format(management_url.rstrip("/"), model), timeout=timeout) as reply:
            described: List[Dict[str, Any]] = json.load(reply)
            return described
    except urllib.error.HTTPError as error:
        return [] if error.code == 404 else None
    except (OSError, ValueError):
        return None


def registered_models(management_url: str, timeout: float = 2.0) -> Optional[List[str]]:
    """The names of the models the server has registered (None when it cannot be reached)."""
    try:
        with urllib.request.urlopen("{}/models".format(management_url.rstrip("/")), timeout=timeout) as reply:
            return [model["modelName"] for model in json.load(reply).get("models", [])]
    except (OSError, ValueError, KeyError):
        return None


def models_or_registered(management_url: str, model: Optional[str]) -> Optional[List[str]]:
    """[model] when one is named, else every model the server registered (those it loaded at
    start: config.properties' load_models), so the check needs no model name of its own."""
    return [model] if model else registered_models(management_url)


def default_version_workers(described: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The workers of the default version (the first) in a model description."""
    return [worker for version in described[:1] for worker in version.get("workers", [])]


def all_ready(workers_: List[Dict[str, Any]]) -> bool:
    return bool(workers_) and all(worker.get("status") == "READY" for worker in workers_)


def any_ready(workers_: List[Dict[str, Any]]) -> bool:
    return any(worker.get("status") == "READY" for worker in workers_)


def workers(management_url: str, model: str, timeout: float = 2.0) -> List[Dict[str, Any]]:
    """The workers of the model's default version as the management API describes them
    ([] when unreachable or unknown)."""
    return default_version_workers(describe(management_url, model, timeout) or [])


def draining() -> bool:
    return (temp_dir() / DRAINING_MARK).exists()


def model_ready(management_url: str, model: Optional[str] = None, every_worker: bool = False) -> bool:
    """The named model (or every registered model, at least one) has a READY worker, and the
    server is not draining; with every_worker, all its workers are READY (a finished start)."""
    names = models_or_registered(management_url, model)
    ready = all_ready if every_worker else any_ready
    return bool(names) and all(ready(workers(management_url, name)) for name in names) and not draining()


def wait_loaded(management_url: str, model: Optional[str], timeout: float) -> Optional[str]:
    """None once the model's (or every registered model's) workers are READY, else why they
    never will be."""
    deadline = time.monotonic() + timeout
    unknown = 0
    while time.monotonic() < deadline:
        names = models_or_registered(management_url, model)
        described = None if names is None else [describe(management_url, name) for name in names]
        if described is not None and (not names or [] in described):
            # The frontend registers the models it loads at start before it opens the management
            # API: an answer without the model means it failed to load (the log above says why).
            unknown += 1
            if unknown >= 3:
                what = (
                    f"model {model} did not load: the server is up without it"
                    if model
                    else "the models of load_models did not load: the server is up without them"
                )
                return what + " (see its log above)"
        elif described and all(described):
            unknown = 0
            if all(all_ready(default_version_workers(one)) for one in described):
                return None
        time.sleep(1)
    return "the workers of {} are not READY after {:.0f} s".format(
        f"model {model}" if model else "the models of load_models", timeout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--management-url", help=f"default: the address the entrypoint noted, else {DEFAULT_MANAGEMENT}"
    )
    parser.add_argument("--model", help="default: every model the server registered (at least one)")
    parser.add_argument("--wait-loaded", action="store_true", help="wait for READY workers (startup watcher)")
    parser.add_argument("--timeout", type=float, default=600, help="with --wait-loaded: seconds to wait")
    parser.add_argument("--notify-pid", type=int, help="with --wait-loaded: a process to send SIGUSR1 when it fails")
    args = parser.parse_args()
    args.management_url = args.management_url or management_address()
    if not args.wait_loaded:
        sys.exit(0 if model_ready(args.management_url, args.model) else 1)
    problem = wait_loaded(args.management_url, args.model, args.timeout)
    if problem is None:
        sys.exit(0)
    print(f"mymodel-serve: {problem}; stopping", file=sys.stderr, flush=True)
    if args.notify_pid:
        os.kill(args.notify_pid, signal.SIGUSR1)
    sys.exit(1)


if __name__ == "__main__":
    main()
