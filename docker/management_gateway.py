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
caller; registering stays limited by TorchServe's own allowed_urls. Python 3.9, standard
library only; started by docker/entrypoint.sh when MANAGEMENT_TOKEN_FILE is set.
"""

import argparse
import hmac
import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Tuple
from urllib.parse import urlsplit

# Management requests are small; a larger body is refused before it is read.
MAX_BODY = 1 << 20
# Hop-by-hop headers are the proxy's own business (RFC 9110 section 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def host_port(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"expected http://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port


def authorised(header: str, token_file: Path) -> bool:
    token = token_file.read_text().strip()
    scheme, _, given = header.partition(" ")
    # An empty token file never authorises anyone; the comparison takes constant time.
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


class Gateway(BaseHTTPRequestHandler):
    server_version = "mymodel-management-gateway"
    protocol_version = "HTTP/1.1"
    upstream: Tuple[str, int] = ("127.0.0.1", 8091)
    token_file = Path("/nonexistent")

    def refuse(self, status: int, message: str) -> None:
        body = json.dumps({"code": status, "type": http.client.responses[status], "error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="mymodel management"')
        self.end_headers()
        self.wfile.write(body)

    def forward(self) -> None:
        try:
            allowed = authorised(self.headers.get("Authorization", ""), self.token_file)
        except OSError as error:
            self.refuse(503, f"the management token file cannot be read: {error.strerror}")
            return
        if not allowed:
            self.refuse(401, "the management API needs the header 'Authorization: Bearer <token>'")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.refuse(413, f"management request bodies are limited to {MAX_BODY} bytes")
            return
        body = self.rfile.read(length) if length else None
        headers = {key: value for key, value in self.headers.items()
                   if key.lower() not in HOP_BY_HOP and key.lower() != "authorization"}
        connection = http.client.HTTPConnection(*self.upstream, timeout=300)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            reply = connection.getresponse()
            payload = reply.read()
        except OSError as error:
            self.refuse(502, f"TorchServe's management API did not answer: {error}")
            return
        finally:
            connection.close()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = forward

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        # One line per refused or forwarded request would be noise; errors still reach stderr.
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="http://0.0.0.0:8081")
    parser.add_argument("--upstream", default="http://127.0.0.1:8091")
    parser.add_argument("--token-file", required=True, type=Path)
    args = parser.parse_args()
    if not args.token_file.is_file() or not args.token_file.read_text().strip():
        sys.exit(f"MANAGEMENT_TOKEN_FILE {args.token_file} must be a file holding the token")
    Gateway.upstream = host_port(args.upstream)
    Gateway.token_file = args.token_file
    server = ThreadingHTTPServer(host_port(args.listen), Gateway)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
