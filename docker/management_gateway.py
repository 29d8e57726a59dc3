"""The management API published beyond loopback, for operators: a small reverse proxy in
front of TorchServe's management API that only lets authorised callers through.

TorchServe 0.12 has one token switch for inference and management together, and its
inference keys expire, so turning it on would close the public predictions too. The
gateway leaves predictions alone and guards management only:

- every caller needs `Authorization: Bearer <token>`, the token being the contents of
  --token-file (a mounted secret, read at every request so it can be rotated); a port
  forwarder can make outside callers look local, so no address is trusted on its own;
- anything else gets 401 with a JSON error, and nothing reaches TorchServe;
- inside the container, TorchServe's own management API stays on loopback (the healthcheck
  finds it through the entrypoint's note in the temporary directory).

Listing, describing, scaling, set-default and unregister all pass for an authorised
caller; registering stays limited by TorchServe's own allowed_urls.

Bounds, so that no client can hold the gateway (each can be set on the command line):
- at most --max-connections connections at once; a connection beyond them gets 503 at once,
  from the accepting thread, and is closed;
- the request line and headers must arrive within --header-seconds (also the wait for a
  next request on a kept-alive connection) and fit in 64 KiB; a body (1 MiB at most, with a
  Content-Length) within --body-seconds; a reply must be taken within --reply-seconds;
- a request whose framing cannot be trusted (Content-Length missing a number, negative,
  repeated; a Transfer-Encoding) is refused before anything is forwarded.
Every refusal is the project's JSON error and closes the connection; what the client still
sends is read and dropped for a moment (at most 2 s) so that it reads the reply instead of a
reset. Every mutating call (POST, PUT, DELETE) and every refusal is logged as one line on
stderr (LOG_FORMAT=json: a JSON object): client address, token fingerprint (the first 12 hex
digits of the presented token's SHA-256, never the token), method, path, status, time.

Python 3.9, standard library only; started by docker/entrypoint.sh when MANAGEMENT_TOKEN_FILE
is set.
"""

import argparse
import contextlib
import hashlib
import hmac
import http.client
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

LOGGER = "management_gateway"
# Management requests are small; a larger body is refused before it is read.
MAX_BODY = 1 << 20
# The request line and headers together (the standard library alone would take 100 lines of 64 KiB).
MAX_HEADER_BYTES = 64 << 10
# Reading and dropping what a refused client still sends, so that the close does not reset the
# connection before the client has read the reply (as web servers' "lingering close").
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * MAX_BODY
METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
MUTATING = {"POST", "PUT", "DELETE"}
# Hop-by-hop headers are the proxy's own business (RFC 9110 section 7.6.1); Expect is answered here.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
DIGITS = re.compile(r"[0-9]+")
# An origin-form target, printable ASCII only: anything else would not be forwarded as it was sent.
TARGET = re.compile(r"/[!-~]*")
TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    405: "method_not_allowed",
    408: "timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "bad_header",
    502: "bad_gateway",
    503: "overloaded",
    504: "timeout",
    505: "http_version_not_supported",
}


class Limits(NamedTuple):
    connections: int = 32
    header_seconds: float = 10.0
    body_seconds: float = 30.0
    reply_seconds: float = 30.0
    upstream_seconds: float = 300.0


class Refusal(Exception):
    """A request the gateway answers itself: status, stable type, one sentence, the header at fault."""

    def __init__(self, status: int, error: str, field: Optional[str] = None, kind: Optional[str] = None):
        super().__init__(error)
        self.status = status
        self.type = kind or TYPES[status]
        self.error = error
        self.field = field


class HeaderTooLarge(Exception):
    pass


def host_port(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"expected http://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port


def presented_token(header: str) -> Optional[bytes]:
    """The bytes after "Bearer " as the client sent them (headers arrive decoded as ISO-8859-1,
    so any byte maps back), or None without a bearer token."""
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip().encode("latin-1", "replace")


def fingerprint(token: Optional[bytes]) -> Optional[str]:
    """What the log shows of a token: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(token).hexdigest()[:12] if token else None


def authorised(given: Optional[bytes], token_file: Path) -> bool:
    token = token_file.read_bytes().strip()
    # An empty token file never authorises anyone; bytes compared in constant time.
    return bool(token) and given is not None and hmac.compare_digest(given, token)


def body_length(headers: http.client.HTTPMessage) -> int:
    """The request body's length from its one Content-Length, refusing what could be read two ways."""
    if headers.get_all("Transfer-Encoding"):
        raise Refusal(
            411,
            "the management gateway takes request bodies with a Content-Length only, not with a Transfer-Encoding",
            "Transfer-Encoding",
        )
    values = headers.get_all("Content-Length") or []
    if len(values) > 1:
        raise Refusal(400, "the header Content-Length must appear once", "Content-Length", "bad_header")
    if not values:
        return 0
    text = values[0].strip(" \t")
    if not DIGITS.fullmatch(text):
        raise Refusal(
            400,
            f"the header Content-Length must be a number of bytes, got {text[:40]!r}",
            "Content-Length",
            "bad_header",
        )
    if len(text.lstrip("0")) > len(str(MAX_BODY)) or int(text) > MAX_BODY:
        raise Refusal(413, f"management request bodies are limited to {MAX_BODY} bytes", "Content-Length")
    return int(text)


class DeadlineReader(io.RawIOBase):
    """The connection's incoming bytes, every read bounded by one deadline for the whole phase
    (headers, body), so a client that trickles a byte now and then cannot stretch it; and, while
    headers are read, by a byte budget."""

    def __init__(self, connection: socket.socket):
        super().__init__()
        self.connection = connection
        self.deadline = float("inf")
        self.budget: Optional[int] = None
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the deadline passed")
        if self.budget is not None and self.budget <= 0:
            raise HeaderTooLarge()
        self.connection.settimeout(left)
        view = memoryview(buffer)
        if self.budget is not None:
            view = view[: self.budget]
        count = self.connection.recv_into(view)
        self.received += count
        if self.budget is not None:
            self.budget -= count
        return count


class Gateway(BaseHTTPRequestHandler):
    server: "GatewayServer"
    server_version = "mymodel-management-gateway"
    protocol_version = "HTTP/1.1"

    # --- one connection, one request at a time ------------------------------------------------

    def setup(self) -> None:
        self.connection = self.request
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)
        self.wfile = self.connection.makefile("wb")
        self.answered = 0

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self.command, self.path, self.request_version, self.requestline = None, "", "HTTP/1.1", ""
        self.began, self.status, self.refusal, self.token = time.monotonic(), 0, None, None
        self.close_connection, self.raw_requestline = True, b""
        waited_from = self.reader.received
        self.reader.deadline = time.monotonic() + limits.header_seconds
        self.reader.budget = MAX_HEADER_BYTES
        try:
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if len(self.raw_requestline) > 65536:
                    raise Refusal(414, "the request line is longer than 64 KiB")
                if not self.raw_requestline:
                    return  # the client closed the connection
                if not self.parse_request():
                    return  # refused by send_error
                self.reader.budget = None
                if self.command not in METHODS:
                    raise Refusal(405, f"the management gateway answers {', '.join(METHODS)}, not {self.command}")
                if not TARGET.fullmatch(self.path):
                    raise Refusal(400, "the request target must be a path starting with '/', in printable ASCII")
                self.forward()
            except HeaderTooLarge:
                if not self.raw_requestline:
                    raise Refusal(414, "the request line is longer than 64 KiB") from None
                raise Refusal(431, f"the request line and headers must fit in {MAX_HEADER_BYTES} bytes") from None
            except socket.timeout:
                if self.status:
                    return  # the reply could not be sent in time: nothing more to say
                if self.answered and self.reader.received == waited_from:
                    return  # a kept-alive connection that stayed idle: closed quietly
                raise Refusal(
                    408,
                    "the request did not arrive within the time allowed "
                    f"({limits.header_seconds:g} s for the headers, {limits.body_seconds:g} s "
                    "for the body)",
                ) from None
        except Refusal as refusal:
            with contextlib.suppress(OSError):  # a client that does not take its refusal: closed all the same
                self.refuse(refusal)
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            self.answered += 1
            if self.status and (self.command in MUTATING or self.refusal):
                self.log_call()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            raise Refusal(400, "HTTP/0.9 requests are not answered")
        return True

    def handle_expect_100(self) -> bool:
        return True  # "100 Continue" only once the request is known to be acceptable (forward)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The standard library's own refusals (a malformed request line, too many headers) as JSON."""
        status = 400 if code not in TYPES else code
        self.refuse(
            Refusal(
                status,
                f"{message or http.client.responses.get(code, 'bad request')}{': ' + explain if explain else ''}",
            )
        )

    # --- the request ----------------------------------------------------------------------------

    def forward(self) -> None:
        limits = self.server.limits
        authorisations = self.headers.get_all("Authorization") or []
        self.token = presented_token(str(authorisations[0]) if authorisations else "")
        if len(authorisations) > 1:
            raise Refusal(400, "the header Authorization must appear once", "Authorization", "bad_header")
        length = body_length(self.headers)
        for name, value in self.headers.items():
            if "\r" in value or "\n" in value:  # RFC 9112 section 5.2: refused, never forwarded folded
                raise Refusal(400, f"the header {name} is folded over several lines", name, "bad_header")
        try:
            allowed = authorised(self.token, self.server.token_file)
        except OSError as error:
            raise Refusal(
                503, f"the management token file cannot be read: {error.strerror}", kind="unavailable"
            ) from None
        if not allowed:
            raise Refusal(401, "the management API needs the header 'Authorization: Bearer <token>'", "Authorization")
        if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            self.send_response_only(100)
            self.end_headers()
            self.wfile.flush()
        self.reader.deadline = time.monotonic() + limits.body_seconds
        body = self.rfile.read(length) if length else None
        if length and (body is None or len(body) < length):
            self.close_connection = True
            return  # the client closed the connection before its body was complete
        headers = {
            key: value
            for key, value in self.headers.items()
            if key.lower() not in HOP_BY_HOP and key.lower() != "authorization"
        }
        connection = http.client.HTTPConnection(*self.server.upstream, timeout=limits.upstream_seconds)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            reply = connection.getresponse()
            payload = reply.read()
        except ValueError as error:  # http.client will not send what it cannot frame
            raise Refusal(400, f"a header cannot be forwarded: {error}", kind="bad_header") from None
        except socket.timeout:
            raise Refusal(
                504, f"TorchServe's management API did not answer within {limits.upstream_seconds:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise Refusal(502, f"TorchServe's management API did not answer: {error}") from None
        finally:
            connection.close()
        self.connection.settimeout(limits.reply_seconds)
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        self.status = code
        super().send_response(code, message)

    def refuse(self, refusal: Refusal) -> None:
        """The project's JSON error; the connection is closed after it."""
        self.refusal, self.close_connection = refusal, True
        errors: List[Dict[str, str]] = [{"field": refusal.field, "reason": refusal.error}] if refusal.field else []
        body = json.dumps(
            {"code": refusal.status, "type": refusal.type, "error": refusal.error, "errors": errors}
        ).encode()
        self.connection.settimeout(self.server.limits.reply_seconds)
        if not self.request_version.startswith("HTTP/1."):
            self.request_version = "HTTP/1.1"  # a status line even when the request line was unreadable
        self.send_response(refusal.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        if refusal.status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="mymodel management"')
        if refusal.status == 405:
            self.send_header("Allow", ", ".join(METHODS))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    # --- the log --------------------------------------------------------------------------------

    def log_call(self) -> None:
        entry = {
            "client": self.client_address[0],
            "token": fingerprint(self.token),
            "method": self.command,
            "path": self.path[:256],
            "status": self.status,
            "ms": round((time.monotonic() - self.began) * 1000, 1),
        }
        if self.refusal:
            entry["type"] = self.refusal.type
        level = logging.ERROR if self.status >= 500 else logging.WARNING if self.status >= 400 else logging.INFO
        self.server.log(level, entry)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        return  # the stdlib's access log: log_call writes the lines that matter


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, listen: Tuple[str, int], upstream: Tuple[str, int], token_file: Path, limits: Limits):
        super().__init__(listen, Gateway)
        self.upstream, self.token_file, self.limits = upstream, token_file, limits
        self.slots = threading.BoundedSemaphore(limits.connections)
        self.json_lines = os.environ.get("LOG_FORMAT", "text").strip().lower() == "json"
        self.logger = logging.getLogger(LOGGER)
        self.turned_away, self.turned_away_logged = 0, 0.0
        body = json.dumps(
            {
                "code": 503,
                "type": "overloaded",
                "errors": [],
                "error": f"the management gateway is serving {limits.connections} connections, "
                "its limit: retry shortly",
            }
        ).encode()
        self.overloaded = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def process_request(self, request: socket.socket, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.turn_away(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def turn_away(self, request: socket.socket, client_address) -> None:
        """503 from the accepting thread, which must never wait on a client: the reply fits a new
        connection's send buffer, and only what has already arrived is read and dropped."""
        try:
            request.setblocking(False)
            request.send(self.overloaded)
            request.shutdown(socket.SHUT_WR)
            for _ in range(16):
                if not request.recv(65536):
                    break
        except OSError:
            pass
        request.close()
        self.turned_away += 1
        now = time.monotonic()
        if now - self.turned_away_logged >= 10:  # one line per 10 s at most, however many are turned away
            self.log(
                logging.WARNING,
                {
                    "client": client_address[0],
                    "status": 503,
                    "type": "overloaded",
                    "turned_away": self.turned_away,
                    "limit": self.limits.connections,
                },
            )
            self.turned_away, self.turned_away_logged = 0, now

    def shutdown_request(self, request: socket.socket) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
            deadline, dropped = time.monotonic() + LINGER_SECONDS, 0
            while dropped < LINGER_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                request.settimeout(left)
                chunk = request.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # a client that went away is not worth a line
            self.log(logging.ERROR, {"client": client_address[0], "error": repr(error)})

    def log(self, level: int, entry: Dict[str, object]) -> None:
        if self.json_lines:
            stamp = time.time()
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"
            line = json.dumps({"time": when, "level": logging.getLevelName(level).lower(), "logger": LOGGER, **entry})
        else:
            line = f"{LOGGER}: " + " ".join(f"{key}={text(value)}" for key, value in entry.items())
        self.logger.log(level, line)


def text(value: object) -> str:
    """A key=value log value: quoted (JSON) when it holds a space, a quote, '=' or a control character."""
    shown = "-" if value is None else str(value)
    return json.dumps(shown) if not shown or re.search(r'[\s"=\x00-\x1f\x7f-\x9f]', shown) else shown


def options() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="http://0.0.0.0:8081")
    parser.add_argument("--upstream", default="http://127.0.0.1:8091")
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--max-connections", type=int, default=defaults.connections)
    parser.add_argument("--header-seconds", type=float, default=defaults.header_seconds)
    parser.add_argument("--body-seconds", type=float, default=defaults.body_seconds)
    parser.add_argument("--reply-seconds", type=float, default=defaults.reply_seconds)
    parser.add_argument("--upstream-seconds", type=float, default=defaults.upstream_seconds)
    return parser


def main() -> None:
    args = options().parse_args()
    if not args.token_file.is_file() or not args.token_file.read_bytes().strip():
        sys.exit(f"MANAGEMENT_TOKEN_FILE {args.token_file} must be a file holding the token")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    limits = Limits(
        args.max_connections, args.header_seconds, args.body_seconds, args.reply_seconds, args.upstream_seconds
    )
    server = GatewayServer(host_port(args.listen), host_port(args.upstream), args.token_file, limits)
    server.log(logging.INFO, {"listen": args.listen, "upstream": args.upstream, **limits._asdict()})
    server.serve_forever()


if __name__ == "__main__":
    main()
