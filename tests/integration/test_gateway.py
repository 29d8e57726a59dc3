"""docker/management_gateway.py attacked for real, in front of a real TorchServe's management API:
malformed requests, slow clients, more connections than it takes, and the log of what changed.
Each bound is set small here (the same flags, smaller values) so that an attack takes seconds."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from model.config import ROOT
from model.lifecycle.ports import free_ports
from tests.waiting import wait_for

GATEWAY = ROOT / "docker" / "management_gateway.py"
DOC = (ROOT / "docs" / "docker-and-kubernetes.md").read_text()
# A token with non-ASCII characters: the file holds UTF-8, a client sends the same bytes.
TOKEN = "s3cret-tökén-for-the-tests"
AUTHORISED = b"Bearer " + TOKEN.encode()
CONNECTIONS, HEADER_SECONDS, BODY_SECONDS = 6, 2.0, 2.0
# What may pass between a deadline and the refusal's arrival on a loaded test machine.
SLACK = 3.0


def load_gateway_module():
    spec = importlib.util.spec_from_file_location("management_gateway", GATEWAY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gateway_module = load_gateway_module()


@dataclass
class Gateway:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


@contextlib.contextmanager
def started(upstream: str, workdir: Path, env: dict[str, str] | None = None, *options: str) -> Iterator[Gateway]:
    workdir.mkdir(parents=True, exist_ok=True)
    token = workdir / "token"
    token.write_bytes(TOKEN.encode() + b"\n")
    (port,) = free_ports(1)
    log = workdir / "gateway.log"
    command = [
        sys.executable,
        str(GATEWAY),
        "--listen",
        f"http://127.0.0.1:{port}",
        "--upstream",
        upstream,
        "--token-file",
        str(token),
        "--max-connections",
        str(CONNECTIONS),
        "--header-seconds",
        str(HEADER_SECONDS),
        "--body-seconds",
        str(BODY_SECONDS),
        *options,
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "the gateway did not listen within 30 s"
            time.sleep(0.1)
        yield Gateway(port, process, log)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def gateway(server, tmp_path) -> Iterator[Gateway]:
    with started(server.management_url, tmp_path) as running:
        yield running


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes
    closed: bool  # the gateway closed the connection after the reply
    seconds: float

    def json(self) -> dict:
        return json.loads(self.body)


def parse(data: bytes, closed: bool, seconds: float) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        return Reply(None, {}, data, closed, seconds)
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Reply(int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body, closed, seconds)


def exchange(port: int, request: bytes, wait: float = 10, trickle: float | None = None) -> Reply:
    """Send raw bytes (one byte every `trickle` seconds, if given) and read until the gateway closes
    the connection or `wait` seconds pass."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        received, closed = b"", False
        try:
            if trickle is None:
                connection.sendall(request)
            else:
                connection.settimeout(trickle)
                for byte in request:
                    connection.sendall(bytes([byte]))
                    with contextlib.suppress(socket.timeout):
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                connection.settimeout(wait)
            while time.monotonic() - began < wait:
                chunk = connection.recv(65536)
                if not chunk:
                    closed = True
                    break
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        except socket.timeout:
            pass
    return parse(received, closed, time.monotonic() - began)


def request_bytes(
    method: str = "GET",
    target: str = "/models",
    headers: list[tuple[str, bytes | str]] = (),
    body: bytes = b"",
    authorised: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    if authorised:
        lines.append(b"Authorization: " + AUTHORISED)
    lines += [
        name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) for name, value in headers
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_refused(reply: Reply, status: int, kind: str) -> None:
    assert reply.status == status, reply
    error = reply.json()
    assert error["code"] == status and error["type"] == kind and error["error"] and "errors" in error, error
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close" and reply.closed, reply


def served(gateway: Gateway) -> requests.Response:
    return requests.get(f"{gateway.url}/models/mymodel", headers={"Authorization": AUTHORISED}, timeout=30)


# --- who may pass ---------------------------------------------------------------------------------


def test_only_the_tokens_own_bytes_pass_and_every_other_caller_gets_401(gateway):
    allowed = served(gateway)
    assert allowed.status_code == 200 and allowed.json()[0]["modelName"] == "mymodel"
    for given in (
        None,
        b"Bearer wrong",
        b"Bearer " + TOKEN.encode("latin-1"),
        b"Bearer \xff\xfe\x00",
        b"Basic " + TOKEN.encode(),
        b"Bearer " + TOKEN.upper().encode(),
    ):
        headers = [("Authorization", given)] if given is not None else []
        reply = exchange(gateway.port, request_bytes(headers=headers, authorised=False))
        assert_refused(reply, 401, "unauthorized")
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert served(gateway).status_code == 200


# --- malformed requests: each refused with its status, the connection closed ----------------------

MALFORMED = {
    "content_length_negative": (request_bytes(headers=[("Content-Length", "-1")]), 400, "bad_header"),
    "content_length_not_a_number": (request_bytes(headers=[("Content-Length", "12abc")]), 400, "bad_header"),
    "content_length_superscript_digit": (request_bytes(headers=[("Content-Length", "²".encode())]), 400, "bad_header"),
    "content_length_a_list": (request_bytes(headers=[("Content-Length", "1, 1")], body=b"x"), 400, "bad_header"),
    "content_length_twice": (
        request_bytes(headers=[("Content-Length", "1"), ("Content-Length", "1")], body=b"x"),
        400,
        "bad_header",
    ),
    "content_length_5000_digits": (request_bytes(headers=[("Content-Length", "9" * 5000)]), 413, "payload_too_large"),
    "body_over_the_limit": (
        request_bytes("PUT", headers=[("Content-Length", str(gateway_module.MAX_BODY + 1))]),
        413,
        "payload_too_large",
    ),
    "transfer_encoding": (
        request_bytes("POST", headers=[("Transfer-Encoding", "chunked")], body=b"1\r\nx\r\n0\r\n\r\n"),
        411,
        "length_required",
    ),
    "authorization_twice": (request_bytes(headers=[("Authorization", "Bearer wrong")]), 400, "bad_header"),
    "folded_header": (request_bytes(headers=[("X-Folded", "a\r\n b")]), 400, "bad_header"),
    "unknown_method": (request_bytes("PATCH"), 405, "method_not_allowed"),
    "absolute_target": (request_bytes(target="http://example.com/models"), 400, "invalid_request"),
    "unreadable_request_line": (b"GARBAGE\r\n\r\n", 400, "invalid_request"),
    "http_2": (b"GET /models HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
    "request_line_over_64_kib": (request_bytes(target="/" + "a" * 70_000), 414, "uri_too_long"),
    "headers_over_64_kib": (
        request_bytes(headers=[(f"X-Filler-{i}", "a" * 1000) for i in range(90)]),
        431,
        "bad_header",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_each_malformed_request_is_refused_with_its_json_error_and_the_connection_closed(gateway, case):
    request, status, kind = MALFORMED[case]
    assert_refused(exchange(gateway.port, request), status, kind)


def test_a_refused_body_is_dropped_never_read_as_a_next_request(gateway):
    """An unauthorised request whose body is itself an authorised request: one 401, then the close."""
    smuggled = request_bytes("DELETE", "/models/mymodel")
    reply = exchange(
        gateway.port,
        request_bytes("POST", headers=[("Content-Length", str(len(smuggled)))], body=smuggled, authorised=False),
    )
    assert_refused(reply, 401, "unauthorized")
    assert b"HTTP/1.1" not in reply.body
    assert served(gateway).status_code == 200  # the model is still there


def test_a_client_sending_a_refused_body_reads_its_refusal_not_a_reset(gateway):
    """The refusal comes before the body is read; the body that follows is dropped until the client
    has read it (the framing is checked first: too large is 413 for anyone)."""
    limit = gateway_module.MAX_BODY
    anonymous = requests.post(f"{gateway.url}/models", data=b"0" * limit, timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "unauthorized"
    for headers in ({}, {"Authorization": AUTHORISED}):
        too_large = requests.post(f"{gateway.url}/models", data=b"0" * (2 * limit), headers=headers, timeout=30)
        assert too_large.status_code == 413 and too_large.json()["type"] == "payload_too_large"


def test_expect_100_continue_is_answered_only_once_the_request_is_acceptable(gateway):
    ask = [("Content-Length", "10"), ("Expect", "100-continue")]
    assert_refused(exchange(gateway.port, request_bytes("POST", headers=ask, authorised=False)), 401, "unauthorized")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        connection.sendall(request_bytes("POST", "/models?url=http://127.0.0.1:9/x.mar", headers=ask))
        assert connection.recv(65536).startswith(b"HTTP/1.1 100")


# --- slow clients ---------------------------------------------------------------------------------


def test_slow_headers_and_slow_bodies_are_cut_at_their_deadlines_while_others_are_served(gateway):
    slow_headers = request_bytes()[:-2] + b"X-Slow: " + b"a" * 100 + b"\r\n\r\n"
    slow_body = request_bytes("POST", headers=[("Content-Length", "100")])
    with ThreadPoolExecutor(2) as pool:
        headers = pool.submit(exchange, gateway.port, slow_headers, 30, 0.25)
        body = pool.submit(trickle_body, gateway.port, slow_body, 0.25)
        wait_for(lambda: accepted(gateway) >= 2, 10, "both slow clients accepted")
        assert served(gateway).status_code == 200  # others are served meanwhile
        for reply, deadline in ((headers.result(), HEADER_SECONDS), (body.result(), BODY_SECONDS)):
            assert_refused(reply, 408, "timeout")
            assert deadline <= reply.seconds < deadline + SLACK, reply.seconds
    assert served(gateway).status_code == 200


def trickle_body(port: int, head: bytes, every: float) -> Reply:
    """Headers at once, then a body byte every `every` seconds."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head)
        received = b""
        connection.settimeout(every)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while time.monotonic() - began < 30:
                with contextlib.suppress(socket.timeout):
                    chunk = connection.recv(65536)
                    if not chunk:
                        return parse(received, True, time.monotonic() - began)
                    received += chunk
                    continue
                connection.sendall(b"x")
    return parse(received, False, time.monotonic() - began)


def test_an_idle_kept_alive_connection_is_closed_quietly_after_the_header_deadline(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as connection:
        connection.sendall(request_bytes())
        began, received = time.monotonic(), b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1") == 1
    assert HEADER_SECONDS <= time.monotonic() - began < HEADER_SECONDS + SLACK


# --- more connections than it takes ---------------------------------------------------------------


@contextlib.contextmanager
def held(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each sent half a request line and hold on."""
    connections = []
    try:
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(b"GET /mod")
            connections.append(connection)
        yield connections
    finally:
        for connection in connections:
            connection.close()


def threads(gateway: Gateway) -> int:
    return psutil.Process(gateway.process.pid).num_threads()


def accepted(gateway: Gateway) -> int:
    """Connections the gateway has accepted and holds open now (its own sockets on its port; not a
    thread count, which a thread still ending after an earlier request would inflate)."""
    return sum(
        1
        for connection in psutil.Process(gateway.process.pid).net_connections("tcp")
        if connection.laddr and connection.laddr.port == gateway.port and connection.status == psutil.CONN_ESTABLISHED
    )


def every_slot_taken(gateway: Gateway) -> None:
    """Waits until the held connections hold every slot: a new connection gets the quick 503. (Not
    a thread count: a thread that served the start-up probe may still be ending when counted.)"""
    wait_for(lambda: served(gateway).status_code == 503, 10, "the held connections accepted, every slot taken")


def test_connections_beyond_the_limit_get_503_at_once_and_the_gateway_recovers(gateway):
    idle_threads = threads(gateway)
    with held(gateway.port, CONNECTIONS):
        every_slot_taken(gateway)
        with ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(lambda _: exchange(gateway.port, request_bytes(), 10), range(64)))
        busiest = threads(gateway)
    for reply in replies:
        assert_refused(reply, 503, "overloaded")
        assert reply.headers["retry-after"] == "1"
        assert reply.seconds < 2, reply.seconds  # at once, not after the held ones time out
    assert busiest <= idle_threads + CONNECTIONS
    # The held connections were closed by the client: their slots are free again at once.
    deadline = time.monotonic() + 10
    while (reply := served(gateway)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reply.status_code == 200
    assert any('"turned_away"' in line or "turned_away=" in line for line in gateway.lines())


def test_slowloris_connections_that_hold_every_slot_are_cut_and_the_gateway_serves_again(gateway):
    with held(gateway.port, CONNECTIONS) as connections:
        every_slot_taken(gateway)  # full: a quick 503, not silence
        began = time.monotonic()
        for connection in connections:  # the slow clients keep trickling: the header deadline still cuts them
            with contextlib.suppress(OSError):
                connection.sendall(b"e")
        deadline = time.monotonic() + HEADER_SECONDS + SLACK
        while (reply := served(gateway)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reply.status_code == 200
        assert time.monotonic() - began < HEADER_SECONDS + SLACK
        for connection in connections:
            connection.settimeout(SLACK)
            assert_refused(parse(connection.recv(65536), True, 0), 408, "timeout")


def test_a_burst_of_many_connections_gets_an_answer_on_every_one(gateway):
    """Far more clients than connections at once: each gets 200 or a quick 503, never silence or a reset."""

    def call(_):
        try:
            return served(gateway).status_code
        except requests.RequestException as error:
            return repr(error)

    with ThreadPoolExecutor(48) as pool:
        statuses = list(pool.map(call, range(300)))
    assert set(statuses) <= {200, 503}, [s for s in statuses if s not in (200, 503)]
    assert statuses.count(200) > 0
    assert served(gateway).status_code == 200
    assert gateway.process.poll() is None


# --- the log of what changed ----------------------------------------------------------------------

# A text line's key=value pairs, a value quoted as a JSON string where it holds a space, a quote or '='.
KEY_VALUE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def entries(gateway: Gateway, json_lines: bool) -> list[dict]:
    found = []
    for line in gateway.lines():
        if json_lines:
            found.append(json.loads(line))
        elif line.startswith("management_gateway: "):
            found.append(
                {key: json.loads(value) if value.startswith('"') else value for key, value in KEY_VALUE.findall(line)}
            )
    return [entry for entry in found if "method" in entry]


def logged(gateway: Gateway, json_lines: bool, count: int) -> list[dict]:
    """The call lines, once `count` of them are written (a line follows its reply by a moment)."""
    deadline = time.monotonic() + 10
    while len(found := entries(gateway, json_lines)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_mutating_call_and_every_refusal_is_one_line_with_a_fingerprint_never_the_token(
    server, tmp_path, log_format
):
    with started(server.management_url, tmp_path, env={"LOG_FORMAT": log_format}) as gateway:
        operator = {"Authorization": AUTHORISED}
        assert served(gateway).status_code == 200  # a read that passes: no line
        version = served(gateway).json()[0]["modelVersion"]
        calls = [
            ("PUT", f"/models/mymodel/{version}/set-default", operator),
            ("DELETE", "/models/not-a-model", operator),
            ("POST", "/models?url=http://127.0.0.1:9/x.mar", operator),
            ("PUT", "/models/mymodel?min_worker=4", {"Authorization": "Bearer wrong"}),
            ("GET", "/models", {}),
        ]
        statuses = [
            requests.request(method, gateway.url + path, headers=headers, timeout=30).status_code
            for method, path, headers in calls
        ]
        lines = logged(gateway, log_format == "json", len(calls))
    assert [(entry["method"], entry["path"], int(entry["status"])) for entry in lines] == [
        (method, path, status) for (method, path, _), status in zip(calls, statuses)
    ]
    ours = hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert [entry["token"] for entry in lines] == [ours] * 3 + [
        hashlib.sha256(b"wrong").hexdigest()[:12],
        None if log_format == "json" else "-",
    ]
    assert {entry["client"] for entry in lines} == {"127.0.0.1"}
    assert [entry.get("type") for entry in lines][-2:] == ["unauthorized", "unauthorized"]
    text = gateway.log.read_bytes()
    assert TOKEN.encode() not in text and b"wrong" not in text


def test_the_fingerprint_command_in_the_docs_gives_the_logged_fingerprint(server, tmp_path):
    command = next(line.split("#")[0].strip() for line in DOC.splitlines() if "sha256sum" in line)
    with started(server.management_url, tmp_path) as gateway:
        requests.put(
            f"{gateway.url}/models/mymodel",
            headers={"Authorization": AUTHORISED},
            timeout=30,
            params={"min_worker": 99, "max_worker": 1},
        )  # refused by TorchServe: a change tried
        (line,) = logged(gateway, False, 1)
    (tmp_path / "management-token").write_bytes(TOKEN.encode() + b"\n")
    shown = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, timeout=30, check=True)
    assert shown.stdout.decode().strip() == line["token"]


def test_the_documented_bounds_are_the_gateways_defaults():
    defaults = vars(gateway_module.options().parse_args(["--token-file", "token"]))
    documented = re.findall(r"(\d+)(?: s)? \(`--([a-z-]+)`\)", DOC)
    assert {flag for _, flag in documented} == {
        "max-connections",
        "header-seconds",
        "body-seconds",
        "reply-seconds",
        "upstream-seconds",
    }
    for value, flag in documented:
        assert defaults[flag.replace("-", "_")] == float(value), flag


def test_a_management_api_that_is_down_or_silent_gets_502_or_504(tmp_path):
    (closed,) = free_ports(1)
    with started(f"http://127.0.0.1:{closed}", tmp_path / "down") as gateway:
        assert_refused(exchange(gateway.port, request_bytes()), 502, "bad_gateway")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        with started(f"http://127.0.0.1:{port}", tmp_path / "silent", None, "--upstream-seconds", "1") as gateway:
            reply = exchange(gateway.port, request_bytes())
    assert_refused(reply, 504, "timeout")
    assert 1 <= reply.seconds < 1 + SLACK
