"""Exit 0 when the model's workers are READY, 1 otherwise: the image's HEALTHCHECK.

`/ping` answers Healthy even while workers crash-loop, so readiness asks the
management API about the model itself. Python 3.9, standard library only.
"""

import argparse
import json
import sys
import urllib.request
from typing import Any, Dict, List


def workers(management_url: str, model: str, timeout: float = 2.0) -> List[Dict[str, Any]]:
    """The workers of the model's default version as the management API describes them
    ([] when unreachable or unknown)."""
    try:
        with urllib.request.urlopen("{}/models/{}".format(management_url.rstrip("/"), model), timeout=timeout) as reply:
            described: List[Dict[str, Any]] = json.load(reply)
    except (OSError, ValueError):
        return []
    return [worker for version in described[:1] for worker in version.get("workers", [])]


def worker_states(management_url: str, model: str, timeout: float = 2.0) -> List[str]:
    """Status of each worker of the model's default version."""
    return [worker.get("status", "") for worker in workers(management_url, model, timeout)]


def model_ready(management_url: str, model: str) -> bool:
    states = worker_states(management_url, model)
    return bool(states) and all(state == "READY" for state in states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--management-url", default="http://127.0.0.1:8081")
    parser.add_argument("--model", default="mymodel")
    args = parser.parse_args()
    sys.exit(0 if model_ready(args.management_url, args.model) else 1)


if __name__ == "__main__":
    main()
