"""The client-address policy through real HTTP hops on loopback.

Two reverse proxies (the load balancer and an internal proxy) run as small
stdlib HTTP servers in front of the live server, each on its own loopback
address and each appending the peer it received the request from to
X-Forwarded-For, as nginx's ``$proxy_add_x_forwarded_for`` does. Clients
connect from addresses of their own (Linux routes all of 127.0.0.0/8 to
loopback), so every hop of the chain is a real TCP peer.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from cakra.api.auth import AUTH_FAILURE_LIMIT

BALANCER = "127.0.0.2"
INTERNAL_PROXY = "127.0.0.3"
CLIENT_A = "127.0.0.10"
CLIENT_B = "127.0.0.11"
PATH = "/api/v1/violations/not-there"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Upstream:
    host: str
    port: int
    source: str  # the address this proxy connects from


def proxy_server(*, listen: str, upstream: Upstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            prior = headers.pop("X-Forwarded-For", "")
            headers["X-Forwarded-For"] = f"{prior}, {self.client_address[0]}" if prior else self.client_address[0]
            connection = http.client.HTTPConnection(
                upstream.host, upstream.port, timeout=10, source_address=(upstream.source, 0)
            )
            try:
                connection.request("GET", self.path, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in {*HOP_HEADERS, "content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            return

    return ThreadingHTTPServer((listen, 0), Handler)


@pytest.fixture
def balancer(live_server) -> Iterator[tuple[str, int]]:
    """client -> balancer -> internal proxy -> live server."""
    target = urlsplit(live_server.url)
    internal = proxy_server(
        listen=INTERNAL_PROXY, upstream=Upstream(str(target.hostname), int(target.port or 80), INTERNAL_PROXY)
    )
    front = proxy_server(listen=BALANCER, upstream=Upstream(INTERNAL_PROXY, internal.server_address[1], BALANCER))
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in (internal, front)]
    for thread in threads:
        thread.start()
    yield BALANCER, front.server_address[1]
    for server in (front, internal):
        server.shutdown()
        server.server_close()


def get(balancer, *, source: str, forwarded_for: str = "") -> int:
    host, port = balancer
    connection = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    headers = {"Host": "localhost", "Authorization": "Bearer cakra_wrong"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        connection.request("GET", PATH, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_failures_are_counted_per_real_client_behind_two_proxies(balancer, settings, clock):
    """Failed API keys through the balancer and the internal proxy: client A
    forging a new X-Forwarded-For each time is still one client and is
    limited; client B behind the same proxies is not."""
    settings.CAKRA_TRUSTED_PROXY_NETWORKS = [f"{BALANCER}/32", f"{INTERNAL_PROXY}/32"]
    clock.advance_to_window_start(AUTH_FAILURE_LIMIT.seconds)  # all attempts in one window

    forged = [get(balancer, source=CLIENT_A, forwarded_for=f"198.51.100.{i}") for i in range(AUTH_FAILURE_LIMIT.count)]
    assert forged == [401] * AUTH_FAILURE_LIMIT.count
    assert get(balancer, source=CLIENT_A, forwarded_for="192.0.2.200, 127.0.0.2") == 429

    assert get(balancer, source=CLIENT_B) == 401
