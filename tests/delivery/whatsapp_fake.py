"""A small fake of Meta's Cloud API messages endpoint, for the adapter's tests.

Real sockets on 127.0.0.1 (port 0), HTTP/1.1 keep-alive as Graph speaks it,
Meta's answer and error envelopes. Recipients decide the answer through the
shared magic numbers (cakra.simulators.magic); a test can also queue the
next answers itself. It counts TCP connections, so a test can check that a
batch travels over one.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from cakra.simulators.magic import Magic, magic_for

TOKEN = "fake-cloud-api-token-0123456789"
PHONE_NUMBER_ID = "106540352242922"


def error_body(code: int, message: str = "error", details: str = "") -> dict[str, Any]:
    return {
        "error": {
            "message": f"({code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or message},
            "fbtrace_id": "AbCdEfGh123",
        }
    }


# Magic behaviours → (HTTP status, body). Meta answers most errors 400;
# 131000 (something went wrong) comes with a 500.
MAGIC_ANSWERS: dict[Magic, tuple[int, dict[str, Any]]] = {
    Magic.PERMANENT: (400, error_body(131026, "Message undeliverable", "to +6281999200000 failed")),
    Magic.THROTTLED: (400, error_body(130429, "Rate limit hit")),
    Magic.TEMPORARY: (500, error_body(131000, "Something went wrong")),
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    connection: int


@dataclass
class FakeCloudApi:
    token: str = TOKEN
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    connections: int = 0
    # Answers to give before any other: (status, body, headers).
    queued: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    # Close each connection after answering, without saying so (as a server
    # whose idle timeout ran out does).
    drop_silently: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.queued.append((status, raw, headers or {}))

    def received(self) -> int:
        return len(self.accepted)

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go in two writes: without this, Nagle and
                # the client's delayed ACK add 40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with fake.lock:
                    fake.connections += 1
                    self.connection_number = fake.connections

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                received = Received(self.path, dict(self.headers.items()), body, self.connection_number)
                with fake.lock:
                    fake.requests.append(received)
                status, answer, headers = fake.answer(received)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)
                if fake.drop_silently:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def answer(self, received: Received) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            if self.queued:
                return self.queued.pop(0)
        if received.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, json.dumps(error_body(190, "Invalid OAuth access token")).encode(), {}
        behaviour = magic_for(str(received.body.get("to", "")))
        if behaviour in MAGIC_ANSWERS:
            status, body = MAGIC_ANSWERS[behaviour]
            return status, json.dumps(body).encode(), {}
        with self.lock:
            self.accepted.append(received)
            serial = len(self.accepted)
        to = str(received.body.get("to", ""))
        wamid = "wamid." + base64.b64encode(f"fake-{serial}-{to[-4:]}".encode()).decode()
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid, "message_status": "accepted"}],
        }
        return 200, json.dumps(answer).encode(), {}
