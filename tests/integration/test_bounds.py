"""No single client takes a replica down: on every public port (predictions behind the bounding
proxy, docker/haproxy.cfg; the v2 protocol in the JVM, handler/frontend/OpenInferenceProtocol.java;
the management gateway behind the proxy), a few hundred uploads of nearly max_request_size held
open, and as many slowloris connections, while another client posts the sample record: that
client keeps getting answers, the JVM stays up, the server cuts the attacker's connections within
its deadline and answers the attacker itself at once after it lets go.

The attacker connects from 127.0.0.1, the other client from 127.0.0.2 (another address on the
loopback interface): the bounds per client address keep one from taking the other's places."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import urllib3

from harness.torchserve import Server, torchserve
from model.config import ROOT
from model.lifecycle.ports import free_ports

SAMPLE = (ROOT / "sample_input.json").read_bytes()
ATTACKER, VICTIM = "127.0.0.1", "127.0.0.2"
PROXY = (ROOT / "docker" / "haproxy.cfg").read_text()
PROXY_MANAGEMENT = (ROOT / "docker" / "haproxy-management.cfg").read_text()
PLUGIN = (ROOT / "handler" / "frontend" / "OpenInferenceProtocol.java").read_text()
PROPERTIES = dict(
    line.split("=", 1)
    for line in (ROOT / "config.properties").read_text().splitlines()
    if line and not line.startswith("#")
)
MAX_REQUEST_SIZE = int(PROPERTIES["max_request_size"])
TOKEN = "bounds-token"
REPORTS = ROOT / "reports" / "bounds"


def per_client(config: str) -> int:
    return int(re.search(r"reject if \{ sc0_conn_cur gt (\d+) \}", config).group(1))


def seconds(config: str, name: str) -> float:
    return float(re.search(rf"timeout {name} (\d+)s", config).group(1))


def jdk_limit(name: str) -> int:
    return int(re.search(rf'"{re.escape(name)}", "(\d+)"', PLUGIN).group(1))


# What each port lets one client hold, and how long it lets a request take to arrive.
HOLD = {
    "inference": per_client(PROXY),
    "management": per_client(PROXY_MANAGEMENT),
    "oip": jdk_limit("jdk.httpserver.maxConnections"),
}
DEADLINE = {
    "inference": seconds(PROXY, "http-request"),
    "management": seconds(PROXY, "http-request"),
    "oip": jdk_limit("sun.net.httpserver.maxReqTime"),
}
# A few dozen connections more than the largest bound, each with a body one byte short of the limit.
CONNECTIONS = max(HOLD.values()) + 44
PATHS = {"inference": "/predictions/mymodel", "oip": "/v2/models/mymodel/infer", "management": "/models"}


@pytest.fixture(scope="module")
def gated(archive: Path, plugins: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """The server as the image runs it with the management API published through the gateway."""
    workdir = tmp_path_factory.mktemp("bounds")
    (workdir / "token").write_text(TOKEN)
    (gateway,) = free_ports(1)
    extra = {
        "MANAGEMENT_TOKEN_FILE": str(workdir / "token"),
        "MANAGEMENT_GATEWAY_ADDRESS": f"http://127.0.0.1:{gateway}",
    }
    with torchserve(archive.parent, workdir, extra_env=extra, plugins=plugins) as server:
        yield server, f"http://127.0.0.1:{gateway}"


def port_of(gated: tuple[Server, str], name: str) -> int:
    server, gateway = gated
    url = {"inference": server.inference_url, "oip": server.oip_url, "management": gateway}[name]
    return int(url.rsplit(":", 1)[1])


@dataclass
class Victim:
    """Another client posting the sample record (and, with a gateway, asking management) until stopped."""

    inference: int
    gateway: int
    answers: list[tuple[str, int, float]] = field(default_factory=list)  # (what, status or 0 = no answer, s)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pools = {
            what: urllib3.HTTPConnectionPool(
                "127.0.0.1",
                port,
                maxsize=1,
                source_address=(VICTIM, 0),
                timeout=urllib3.Timeout(connect=5, read=20),
                retries=False,
            )
            for what, port in (("predictions", self.inference), ("management", self.gateway))
        }
        while not self.stop.is_set():
            for what, pool in pools.items():
                began = time.monotonic()
                try:
                    if what == "predictions":
                        reply = pool.request(
                            "POST", "/predictions/mymodel", body=SAMPLE, headers={"Content-Type": "application/json"}
                        )
                    else:
                        reply = pool.request("GET", "/models", headers={"Authorization": f"Bearer {TOKEN}"})
                    status = reply.status
                except urllib3.exceptions.HTTPError:
                    status = 0
                self.answers.append((what, status, time.monotonic() - began))

    def summary(self) -> dict:
        predictions = [a for a in self.answers if a[0] == "predictions"]
        return {
            "requests": len(self.answers),
            "predictions": len(predictions),
            "predictions_200": sum(a[1] == 200 for a in predictions),
            "management_200": sum(a[1] == 200 for a in self.answers if a[0] == "management"),
            "unanswered": sum(a[1] == 0 for a in self.answers),
            "statuses": sorted({a[1] for a in self.answers}),
            "slowest_s": round(max((a[2] for a in self.answers), default=0), 3),
        }


def request_head(name: str, path: str, length: int) -> bytes:
    token = f"Authorization: Bearer {TOKEN}\r\n" if name == "management" else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{token}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def attack(port: int, name: str, kind: str) -> list[socket.socket]:
    """CONNECTIONS connections from the attacker's address: "upload" sends the headers of a body of
    max_request_size and all of it but the last byte; "slowloris" sends headers without their end."""
    sockets, pending = [], {}
    for _ in range(CONNECTIONS):
        try:
            connection = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0))
        except OSError:
            continue  # refused or not accepted in time: a bound at work
        connection.setblocking(False)
        sockets.append(connection)
        if kind == "upload":
            pending[connection] = memoryview(
                request_head(name, PATHS[name], MAX_REQUEST_SIZE) + b" " * (MAX_REQUEST_SIZE - 1)
            )
        else:
            pending[connection] = memoryview(f"POST {PATHS[name]} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
    push(pending, deadline=time.monotonic() + 5)
    return sockets


def push(pending: dict[socket.socket, memoryview], deadline: float) -> None:
    """Send what each connection still has to send, as far as the server reads it, until the deadline."""
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], list(pending), [], 0.2)
        for connection in writable:
            try:
                sent = connection.send(pending[connection])
            except OSError:
                sent = len(pending[connection])  # closed by the server
            pending[connection] = pending[connection][sent:]
            if not pending[connection]:
                del pending[connection]


def trickle(sockets: list[socket.socket]) -> None:
    """One more header line on every connection (a slowloris never finishes its headers)."""
    for connection in sockets:
        with contextlib.suppress(OSError):  # full, or closed by the server
            connection.send(b"X-Slow: 1\r\n")


def state(connection: socket.socket) -> str:
    """ "open", "closed" (by the server, without an answer) or the first line of the server's answer."""
    try:
        data = connection.recv(4096)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"


def child_named(server: Server, name: str, recursive: bool = False) -> psutil.Process:
    """The server's child process `name`; children that end while being looked at (a probe, a
    shell) are passed over."""
    for child in psutil.Process(server.process.pid).children(recursive=recursive):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() == name or name in child.cmdline()[:1]:
                return child
    raise AssertionError(f"no {name} process under the server")


def jvm(server: Server) -> psutil.Process:
    return child_named(server, "java", recursive=True)


def proxy_process(server: Server) -> psutil.Process:
    return child_named(server, "haproxy")


def attacker_answered(server: Server, deadline: float) -> float:
    """Seconds until the attacker's own address gets a 200 for the sample record."""
    began = time.monotonic()
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1",
        int(server.inference_url.rsplit(":", 1)[1]),
        maxsize=1,
        source_address=(ATTACKER, 0),
        timeout=5,
        retries=False,
    )
    while time.monotonic() - began < deadline:
        try:
            if (
                pool.request(
                    "POST", "/predictions/mymodel", body=SAMPLE, headers={"Content-Type": "application/json"}
                ).status
                == 200
            ):
                return time.monotonic() - began
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the attacker's address got no answer within {deadline} s of letting go")


@pytest.mark.parametrize("kind", ["upload", "slowloris"])
@pytest.mark.parametrize("name", ["inference", "oip", "management"])
def test_one_client_cannot_take_the_server_down(gated, name, kind):
    server, _ = gated
    port = port_of(gated, name)
    java = jvm(server)
    victim = Victim(port_of(gated, "inference"), port_of(gated, "management"))
    thread = threading.Thread(target=victim.run, daemon=True)
    thread.start()
    began = time.monotonic()
    sockets = attack(port, name, kind)
    try:
        held_for = time.monotonic()  # each connection's deadline started before this
        # The other client is answered while the attacker holds what it could get.
        while time.monotonic() - held_for < 3:
            time.sleep(0.5)
            if kind == "slowloris":
                trickle(sockets)
        states = [state(connection) for connection in sockets]
        memory = {"jvm_rss_mb": round(java.memory_info().rss / 2**20), "jvm_heap_bound_mb": 512}
        if name != "oip":
            memory["proxy_rss_mb"] = round(proxy_process(server).memory_info().rss / 2**20)
        held = states.count("open")
        # Nothing beyond the bound is held: the rest was closed (or answered) at once.
        assert held <= HOLD[name], (held, HOLD[name])
        assert CONNECTIONS - held >= CONNECTIONS - HOLD[name]
        # The server cuts what it holds within its deadline (slowloris: each connection sent a
        # header line every half second and still was cut), give or take a busy machine.
        deadline = held_for + DEADLINE[name] + 10
        while time.monotonic() < deadline and any(state(c) == "open" for c in sockets):
            if kind == "slowloris":
                trickle(sockets)
            time.sleep(0.5)
        finals = [state(connection) for connection in sockets]
        cut_after = time.monotonic() - began
        assert "open" not in finals, f"{finals.count('open')} connections still open after {cut_after:.0f} s"
    finally:
        for connection in sockets:
            connection.close()
        victim.stop.set()
        thread.join(30)
    assert server.process.poll() is None and java.is_running(), server.log_tail()
    recovered_s = attacker_answered(server, 10)
    answers = victim.summary()
    report = {
        "port": name,
        "attack": kind,
        "connections": CONNECTIONS,
        "bound_per_client": HOLD[name],
        "held": held,
        "refused_at_once": CONNECTIONS - held,
        "cut_after_s": round(cut_after, 1),
        "deadline_s": DEADLINE[name],
        "victim": answers,
        "recovered_s": round(recovered_s, 2),
        **memory,
    }
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{name}-{kind}.json").write_text(json.dumps(report, indent=2) + "\n")
    # The other client got an answer to every request, and predictions throughout.
    assert answers["unanswered"] == 0, report
    assert answers["predictions_200"] >= 3 and answers["management_200"] >= 3, report
    assert set(answers["statuses"]) <= {200, 503}, report


def test_the_proxys_own_refusals_are_json_errors(gated):
    port = port_of(gated, "inference")
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, timeout=20, retries=False)
    refused = {
        "payload_too_large": pool.request(
            "POST",
            "/predictions/mymodel",
            body=b" " * (MAX_REQUEST_SIZE + 1),
            headers={"Content-Type": "application/json"},
        ),
        "bad_header": pool.request(
            "POST",
            "/predictions/mymodel",
            body=SAMPLE,
            headers={"Content-Type": "application/json", "X-Big": "x" * 40_000},
        ),
        "length_required": pool.request(
            "POST",
            "/predictions/mymodel",
            body=iter([SAMPLE]),
            headers={"Content-Type": "application/json"},
            chunked=True,
        ),
    }
    for kind, reply in refused.items():
        assert reply.json() == {"code": reply.status, "type": kind, "error": reply.json()["error"]}, reply.data
    assert [reply.status for reply in refused.values()] == [413, 400, 400]
    # A body that has not arrived whole within the deadline: a 408 in the same shape.
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE["inference"] + 10) as slow:
        slow.sendall(request_head("inference", PATHS["inference"], 100) + b"[")
        answer = b"".join(iter(lambda: slow.recv(4096), b"")).decode()  # until the proxy closes
    assert answer.startswith("HTTP/1.1 408"), answer
    assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {
        "code": 408,
        "type": "timeout",
        "error": "the request body did not arrive within 10 s",
    }
    # Headers that never end get HAProxy's own 408 page: it answers before its error settings apply.
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE["inference"] + 10) as slow:
        slow.sendall(b"POST /predictions/mymodel HTTP/1.1\r\nHost: x\r\n")
        assert b"".join(iter(lambda: slow.recv(4096), b"")).startswith(b"HTTP/1.1 408")


def test_the_v2_plugins_errors_are_json_errors_with_a_type(gated):
    server, _ = gated
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port_of(gated, "oip"), maxsize=1, timeout=30, retries=False)
    cases = {
        "not_found": pool.request("GET", "/v1/models"),
        "payload_too_large": pool.request(
            "POST",
            "/v2/models/mymodel/infer",
            body=b" " * (MAX_REQUEST_SIZE + 1),
            headers={"Content-Type": "application/json"},
        ),
    }
    for kind, reply in cases.items():
        assert reply.json() == {"code": reply.status, "type": kind, "error": reply.json()["error"]}, reply.data
    # A body announced far beyond the limit is refused before it is read.
    with socket.create_connection(("127.0.0.1", port_of(gated, "oip")), timeout=10) as connection:
        connection.sendall(request_head("oip", PATHS["oip"], 10**12))
        answer = connection.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
