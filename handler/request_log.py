"""Request ids and the request log: one line per request that reached the handler, as text or
as one JSON object, with the request's id, model, version, route, status, records and time, and
for a refused request the fields it was refused for.

The request id is the one the client gets back in X-Request-ID: on TorchServe's own routes the
UUID its frontend gives every request (TorchServe 0.12 sets that header itself and replaces any
the handler sets, so a client's own id cannot be echoed there); on the v2 routes the plugin's,
which is the client's X-Request-ID when that is a safe token, else a UUID. A client's own id is
logged beside it as client_request_id, so a request can be followed by either.

Switched by environment variables, which TorchServe's workers inherit from the frontend:
  ACCESS_LOG_LEVEL  "info" writes a line for every request, "warn" for refused and failed ones
                    only (default: off, as docker/log4j2.xml does for the frontend's access log)
  LOG_FORMAT        "json" for one JSON object per line (default: text, key=value)
Pure Python, no torch, Python 3.9 compatible: it runs in the serving image's worker.
"""

import json
import logging
import os
import re
import time
from typing import Any, Dict, Mapping, Optional, Sequence

REQUEST_ID_HEADER = "x-request-id"
# What a client's id may be to be logged (and, on the v2 routes, echoed): 1-128 letters, digits
# and ._:/+=@-, so it cannot break a log line or a header.
# (handler/frontend/OpenInferenceProtocol.java applies the same rule to the v2 routes.)
CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}\Z")
LOGGER = "model.requests"
# One line when a worker has loaded the model, whatever ACCESS_LOG_LEVEL says: which version it serves.
SERVING_LOGGER = "model.serving"
LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def client_request_id(value: Optional[str]) -> Optional[str]:
    """The client's X-Request-ID when it is a safe token, else None."""
    return value if value and CLIENT_ID.match(value) else None


def status_level(status: int) -> int:
    return logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO


class RequestLog:
    """Writes the request lines of one model's worker to the logger "model.requests", which the
    worker's output (and so TorchServe's MODEL_LOG) carries."""

    def __init__(
        self, model: str, version: str, environ: Mapping[str, str] = os.environ, logger: Optional[logging.Logger] = None
    ):
        self.model = model
        self.version = version
        self.json_lines = environ.get("LOG_FORMAT", "text").strip().lower() == "json"
        self.logger = logger or logging.getLogger(LOGGER)
        level = environ.get("ACCESS_LOG_LEVEL", "off").strip().lower()
        self.logger.setLevel(LEVELS.get(level, LEVELS["off"]))

    def enabled_for(self, status: int) -> bool:
        return self.logger.isEnabledFor(status_level(status))

    def write(
        self,
        request_id: str,
        route: str,
        status: int,
        milliseconds: float,
        records: int,
        fields: Sequence[str] = (),
        error: Optional[str] = None,
        client_id: Optional[str] = None,
    ) -> None:
        """One request's line. milliseconds: the worker's time for the batch the request was in
        (parsing, validation, the forward pass); its time queued in the frontend is not visible here."""
        level = status_level(status)
        if not self.logger.isEnabledFor(level):
            return
        entry: Dict[str, Any] = {"request_id": request_id}
        if client_id and client_id != request_id:
            entry["client_request_id"] = client_id
        entry.update(
            {
                "model": self.model,
                "model_version": self.version,
                "route": route,
                "status": status,
                "latency_ms": round(milliseconds, 3),
                "scored": records,
            }
        )
        if fields:
            entry["fields"] = list(fields)
        if error:
            entry["error"] = error
        self.logger.log(level, log_line(entry, level, LOGGER, self.json_lines))


def log_serving(
    model: str, version: str, environ: Mapping[str, str] = os.environ, logger: Optional[logging.Logger] = None
) -> str:
    """Log, at INFO whatever the worker's level, the model and version a worker now serves."""
    logger = logger or logging.getLogger(SERVING_LOGGER)
    logger.setLevel(logging.INFO)
    json_lines = environ.get("LOG_FORMAT", "text").strip().lower() == "json"
    line = log_line(
        {"event": "model_loaded", "model": model, "model_version": version}, logging.INFO, SERVING_LOGGER, json_lines
    )
    logger.info(line)
    return line


def log_line(entry: Dict[str, Any], level: int, logger: str, json_lines: bool) -> str:
    """One log line: a JSON object with time, level and logger first, or key=value text."""
    if json_lines:
        stamp = time.time()
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"
        return json.dumps({"time": when, "level": logging.getLevelName(level).lower(), "logger": logger, **entry})
    return " ".join(f"{key}={_text(value)}" for key, value in entry.items())


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text
