"""The security defaults that can be checked on a real TorchServe natively (see docs/security.md)."""

import hashlib

import psutil
import requests

from model.config import ROOT

PROPERTIES = dict(
    line.split("=", 1)
    for line in (ROOT / "config.properties").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)


def listeners(server):
    tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    found = set()
    for process in tree:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                found.add((connection.laddr.ip.removeprefix("::ffff:"), connection.laddr.port))
    return found


def port(url):
    return int(url.rsplit(":", 1)[1])


def test_the_server_listens_only_where_it_is_told(server):
    """Seven listeners (the bounding proxy on the inference address, TorchServe's own inference API
    behind it, management, metrics, the v2 protocol plugin and the two gRPC APIs that 0.12 cannot
    switch off), every one on loopback when the addresses say so; workers talk over Unix sockets."""
    found = listeners(server)
    assert len(found) == 7, found
    assert {ip for ip, _ in found} == {"127.0.0.1"}
    assert {
        port(server.inference_url),
        port(server.upstream_url),
        port(server.management_url),
        port(server.metrics_url),
    } <= {p for _, p in found}


def test_the_shipped_addresses_publish_only_predictions_and_metrics():
    assert PROPERTIES["inference_address"] == "http://0.0.0.0:8080"
    assert PROPERTIES["metrics_address"] == "http://0.0.0.0:8082"
    assert PROPERTIES["management_address"] == "http://127.0.0.1:8081"
    assert "grpc_inference_address" not in PROPERTIES or PROPERTIES["grpc_inference_address"] == "127.0.0.1"


def test_management_and_metrics_answer_nothing_that_changes_the_model_on_the_public_ports(server):
    for url in (server.inference_url, server.metrics_url):
        reply = requests.post(f"{url}/models", params={"url": "mymodel.mar"}, timeout=10)
        assert 400 <= reply.status_code < 500
        reply = requests.delete(f"{url}/models/mymodel", timeout=10)
        assert 400 <= reply.status_code < 500
    assert requests.get(f"{server.management_url}/models/mymodel", timeout=10).status_code == 200


def test_the_model_store_is_never_written(server, archive):
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in archive.parent.iterdir()}
    for url in ("https://example.com/evil.mar", "file:///etc/passwd", "mymodel.mar?x=../../etc"):
        requests.post(f"{server.management_url}/models", params={"url": url}, timeout=10)
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in archive.parent.iterdir()} == before
