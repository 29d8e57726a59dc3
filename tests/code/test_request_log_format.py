"""The handler's request log (handler/request_log.py) without a server: which client ids are kept,
the text and JSON lines, and the levels ACCESS_LOG_LEVEL switches."""

from __future__ import annotations

import json
import logging

import pytest

from handler.request_log import CLIENT_ID, RequestLog, client_request_id, log_serving
from model.config import ROOT


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", "abc-123"),
        ("a.b:c/d+e=f@g_h", "a.b:c/d+e=f@g_h"),
        ("x" * 128, "x" * 128),
        ("x" * 129, None),
        ("two words", None),
        ('quote"d', None),
        ("line\nbreak", None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_safe_client_id_is_kept(sent, kept):
    assert client_request_id(sent) == kept


def test_the_v2_plugin_keeps_the_same_ids():
    """The plugin (Java) states the rule once more: the two patterns are the same text."""
    java = (ROOT / "handler" / "frontend" / "OpenInferenceProtocol.java").read_text()
    assert f'Pattern.compile("{CLIENT_ID.pattern.removesuffix(chr(92) + "Z")}")' in java


def request_log(level: str, log_format: str, name: str) -> tuple[RequestLog, list[logging.LogRecord]]:
    logger = logging.getLogger(f"test.requests.{name}")
    logger.propagate = False
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.handlers = [handler]
    return RequestLog("mymodel", "1.0-abc", {"ACCESS_LOG_LEVEL": level, "LOG_FORMAT": log_format}, logger), records


def test_a_json_line_holds_the_request():
    log, records = request_log("info", "json", "json")
    log.write(
        "id-1",
        "predict",
        400,
        1.23456,
        0,
        ["distance", "carrier"],
        "record 0, field 'distance': too small",
        client_id="mine",
    )
    (record,) = records
    line = json.loads(record.getMessage())
    assert record.levelno == logging.WARNING
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "warning",
        "logger": "model.requests",
        "request_id": "id-1",
        "client_request_id": "mine",
        "model": "mymodel",
        "model_version": "1.0-abc",
        "route": "predict",
        "status": 400,
        "latency_ms": 1.235,
        "scored": 0,
        "fields": ["distance", "carrier"],
        "error": "record 0, field 'distance': too small",
    }


def test_a_text_line_is_key_value_and_quotes_what_has_spaces():
    log, records = request_log("info", "text", "text")
    log.write("id-2", "predict", 200, 0.5, 3)
    log.write("id-3", "predict", 400, 0.5, 0, ["dep_delay"], 'field "dep_delay": not a number')
    assert records[0].getMessage() == (
        "request_id=id-2 model=mymodel model_version=1.0-abc route=predict status=200 latency_ms=0.5 scored=3"
    )
    assert records[1].getMessage().endswith('fields=dep_delay error="field \\"dep_delay\\": not a number"')


@pytest.mark.parametrize(
    ("level", "written"),
    [("off", []), ("warn", [400, 500]), ("error", [500]), ("info", [200, 400, 500]), ("nonsense", [])],
)
def test_access_log_level_chooses_which_requests_are_written(level, written):
    log, records = request_log(level, "json", f"level-{level}")
    for status in (200, 400, 500):
        assert log.enabled_for(status) == (status in written)
        log.write("id", "predict", status, 1.0, 1)
    assert [json.loads(r.getMessage())["status"] for r in records] == written


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_worker_logs_the_version_it_serves_once_whatever_the_access_log_level(log_format):
    _, records = request_log("off", log_format, f"serving-{log_format}")
    logger = logging.getLogger(f"test.requests.serving-{log_format}")
    logger.setLevel(logging.CRITICAL)  # as quiet as a worker gets
    line = log_serving("mymodel", "1.0-abc", {"LOG_FORMAT": log_format}, logger)
    assert [record.getMessage() for record in records] == [line]
    if log_format == "json":
        assert json.loads(line)["model_version"] == "1.0-abc" and json.loads(line)["event"] == "model_loaded"
    else:
        assert line == "event=model_loaded model=mymodel model_version=1.0-abc"


def test_debug_is_the_most_verbose_level():
    log, _ = request_log("debug", "text", "debug")
    assert log.logger.level == logging.DEBUG and log.enabled_for(200)
