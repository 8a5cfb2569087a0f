"""The gateway's HTTP server: Twilio's Messages endpoint, and the pages, on one loopback port.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (HTTP Basic auth,
form-encoded ``To``, ``From``, ``Body``, ``StatusCallback``) is answered as
Twilio answers it: 201 with the message resource, or an error body
``{"code", "message", "more_info", "status"}``. HTTP/1.1 keep-alive, so a
client may carry many messages over one connection (the server counts the
connections it accepted, for the tests and the benchmark).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cakra.security.identifiers import ascii_int_parse
from cakra.simulators.loopback import LOOPBACK, PAGE_CSP, PAGE_HEADERS, host_header_is_loopback

HTTP_POLL_SECONDS = 0.05
# A kept-alive connection idle this long is closed, as real servers close them.
IDLE_TIMEOUT_SECONDS = 15.0
MAX_REQUEST_BYTES = 64 * 1024
MESSAGES_PATH = "/2010-04-01/Accounts/{sid}/Messages.json"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def twilio_error(status: int, code: int, message: str, *, headers: dict[str, str] | None = None) -> Answer:
    """An error as Twilio writes it."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Answer(status=status, body=json.dumps(body).encode(), headers=headers or {})


@dataclass(frozen=True, slots=True)
class SendRequest:
    account_sid: str
    auth_token: str
    path_sid: str
    form: dict[str, list[str]]


class GatewayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        *,
        port: int,
        credentials: Callable[[], tuple[str, str]],
        send: Callable[[SendRequest], Answer],
        page: Callable[[str, str], Answer | None],
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.credentials = credentials
        self.idle_timeout = idle_timeout
        self.send = send
        self.page = page
        self.connections = 0
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, port), _GatewayRequestHandler)

    def process_request(self, request: socket | tuple[bytes, socket], client_address: Any) -> None:
        with self._connections_lock:
            self.connections += 1
        super().process_request(request, client_address)


class WebServer:
    """The listening socket (bound at once: a port in use fails here) and its thread."""

    def __init__(
        self,
        *,
        port: int,
        credentials: Callable[[], tuple[str, str]],
        send: Callable[[SendRequest], Answer],
        page: Callable[[str, str], Answer | None],
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.http = GatewayHTTPServer(
            port=port, credentials=credentials, send=send, page=page, idle_timeout=idle_timeout
        )
        self._thread = threading.Thread(
            target=self.http.serve_forever,
            kwargs={"poll_interval": HTTP_POLL_SECONDS},
            name="cakra-sms-gateway-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self.http.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.http.shutdown()
        self.http.server_close()


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class _GatewayRequestHandler(BaseHTTPRequestHandler):
    server: GatewayHTTPServer
    server_version = "CakraSmsGateway"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries its Content-Length
    # Headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (tens of milliseconds per answer).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        # The socket timeout ends a connection idle between requests (handle()
        # treats the timeout as the end of the connection).
        self.timeout = self.server.idle_timeout  # type: ignore[misc]  # socketserver reads it per instance
        super().setup()

    def _host_allowed(self) -> bool:
        # Loopback only, and only under a loopback name: a web page that
        # rebinds its own domain to 127.0.0.1 must not read the messages.
        return host_header_is_loopback(self.headers.get("Host", ""))

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._answer(Answer(421, b"misdirected request", "text/plain; charset=utf-8"))
            return
        url = urlsplit(self.path)
        answer = self.server.page(url.path, url.query)
        self._answer(answer or Answer(404, b"not found", "text/plain; charset=utf-8"))

    def do_POST(self) -> None:
        if not self._host_allowed():
            self._answer(Answer(421, b"misdirected request", "text/plain; charset=utf-8"), close=True)
            return
        declared = ascii_int_parse(self.headers.get("Content-Length", ""))
        if declared is None:
            self._answer(twilio_error(411, 20001, "Content-Length is required"), close=True)
            return
        if declared > MAX_REQUEST_BYTES:
            self._answer(twilio_error(413, 20001, "Request entity too large"), close=True)
            return
        raw = self.rfile.read(declared)
        path = urlsplit(self.path).path
        prefix, suffix = "/2010-04-01/Accounts/", "/Messages.json"
        if not (path.startswith(prefix) and path.endswith(suffix)):
            self._answer(twilio_error(404, 20404, "The requested resource was not found"))
            return
        path_sid = path[len(prefix) : -len(suffix)]
        given = _basic_credentials(self.headers.get("Authorization", ""))
        expected_sid, expected_token = self.server.credentials()
        authenticated = (
            given is not None
            and hmac.compare_digest(given[0].encode(), expected_sid.encode())
            and hmac.compare_digest(given[1].encode(), expected_token.encode())
            and hmac.compare_digest(path_sid.encode(), expected_sid.encode())
        )
        if not authenticated:
            headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            self._answer(twilio_error(401, 20003, "Authenticate", headers=headers))
            return
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            self._answer(twilio_error(400, 20001, "Invalid form body"))
            return
        assert given is not None  # noqa: S101 - authenticated above
        self._answer(self.server.send(SendRequest(given[0], given[1], path_sid, form)))

    def _answer(self, answer: Answer, *, close: bool = False) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in PAGE_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Security-Policy", PAGE_CSP)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: a line per request would drown the console (and would name numbers)."""
