"""The simulator's HTTP server on 127.0.0.1: Meta's Graph API paths, the web
pages and the ``/_sim/`` automation endpoints, on one port.

Graph API (bearer token)::

    POST /{version}/{phone_number_id}/messages
    GET  /{version}/{waba_id}/message_templates
    POST /{version}/{waba_id}/message_templates

Pages and automation (loopback only, no token)::

    GET  /                       recipients
    GET  /phone/{wa_id}          that recipient's phone screen, with a reply form
    POST /phone/{wa_id}/reply    the form's target (same-origin only)
    GET  /messages.json          recent messages (``?limit=N``)
    GET  /_sim/received.json     {biz_opaque_callback_data: copies accepted}
    POST /_sim/inbound           {"from", "text", "phone_number_id", "name"?, "forwarded"?}
    POST /_sim/reset             forget messages, windows, counters and limits

HTTP/1.1 with keep-alive, as Graph serves it, so clients can reuse connections.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from cakra.simulators.loopback import LOOPBACK, PAGE_HEADERS, PAGE_HOST_NAMES, host_header_is_loopback, list_limit
from cakra.simulators.whatsapp import errors, web
from cakra.simulators.whatsapp.api import CloudApi

MAX_BODY_BYTES = 64 * 1024
LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
HTTP_POLL_SECONDS = 0.05
REQUEST_QUEUE_SIZE = 256
_GRAPH_PATH = re.compile(r"/(v[0-9]{1,2}\.[0-9])/([0-9]{1,32})/(messages|message_templates)")
_PHONE_PATH = re.compile(r"/phone/([0-9]{8,15})(/reply)?")


class HttpServer:
    """The listening socket (bound at once: a port in use fails here) and its serving thread."""

    def __init__(self, *, api: CloudApi, port: int) -> None:
        self._http = _SimHTTPServer(api=api, port=port)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": HTTP_POLL_SECONDS},
            name="cakra-whatsapp-sim-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._http.shutdown()
        self._http.server_close()


class _SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(self, *, api: CloudApi, port: int) -> None:
        self.api = api
        super().__init__((LOOPBACK, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _SimHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "CakraWhatsAppSim"
    # The headers and the body go out in two writes: with Nagle's algorithm
    # the body waits for the client's delayed ACK of the headers (~40 ms on
    # Linux), which capped each kept connection at ~25 requests per second.
    disable_nagle_algorithm = True
    sys_version = ""

    # --- plumbing -----------------------------------------------------------------------
    def _host_allowed(self) -> bool:
        # Loopback only, and only under a loopback name: a web page that
        # rebinds its own domain to 127.0.0.1 must not read the conversations.
        return host_header_is_loopback(self.headers.get("Host", ""))

    def _same_origin(self) -> bool:
        """A form post from the simulator's own page, not from another site."""
        origin = self.headers.get("Origin")
        port = self.server.server_address[1]
        if origin is not None and origin not in {f"http://{host}:{port}" for host in PAGE_HOST_NAMES}:
            return False
        return self.headers.get("Sec-Fetch-Site", "same-origin") in {"same-origin", "none"}

    def _body(self) -> bytes | None:
        """The request body, or None after answering 411/413."""
        length = self.headers.get("Content-Length", "")
        if not length.isascii() or not length.isdigit():
            self._send_json(411, {"error": "Content-Length required"}, close=True)
            return None
        if int(length) > MAX_BODY_BYTES:
            self._send_json(413, {"error": f"the body is limited to {MAX_BODY_BYTES} bytes"}, close=True)
            return None
        return self.rfile.read(int(length))

    def _send(self, status: int, content_type: str, body: bytes, *, close: bool = False, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in PAGE_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Security-Policy", web.PAGE_CSP)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, *, close: bool = False) -> None:
        self._send(status, "application/json", json.dumps(payload, ensure_ascii=False).encode(), close=close)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: a line per request would drown the console (and name recipients)."""

    # --- routing -------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._host_allowed():
            self._send(421, "text/plain; charset=utf-8", b"misdirected request", close=True)
            return
        url = urlsplit(self.path)
        api = self.server.api
        graph = _GRAPH_PATH.fullmatch(url.path)
        if graph is not None and graph.group(3) == "message_templates":
            answer = api.authorization_error(self.headers.get("Authorization", "")) or api.templates_list(
                graph.group(2)
            )
            self._send_json(*answer)
        elif url.path in {"/", "/messages.json"}:
            limit = list_limit(url.query, default=LIST_LIMIT_DEFAULT, maximum=LIST_LIMIT_MAX)
            if limit is None:
                self._send(400, "text/plain; charset=utf-8", f"limit must be 1..{LIST_LIMIT_MAX}".encode())
            elif url.path == "/":
                self._send(200, "text/html; charset=utf-8", web.index_page(api, limit=limit).encode())
            else:
                self._send_json(200, api.store.messages(limit=limit))
        elif url.path == "/_sim/received.json":
            self._send_json(200, api.store.received())
        elif (phone := _PHONE_PATH.fullmatch(url.path)) is not None and not phone.group(2):
            self._send(200, "text/html; charset=utf-8", web.phone_page(api, phone.group(1)).encode())
        else:
            self._graph_unknown_path(url.path)

    def do_POST(self) -> None:
        if not self._host_allowed():
            self._send(421, "text/plain; charset=utf-8", b"misdirected request", close=True)
            return
        body = self._body()
        if body is None:
            return
        path = urlsplit(self.path).path
        api = self.server.api
        if (graph := _GRAPH_PATH.fullmatch(path)) is not None:
            refused = api.authorization_error(self.headers.get("Authorization", ""))
            if refused is not None:
                self._send_json(*refused)
            elif graph.group(3) == "messages":
                self._send_json(*api.send(graph.group(2), body))
            else:
                self._send_json(*api.templates_create(graph.group(2), body))
        elif path in {"/_sim/inbound", "/_sim/reset"}:
            self._automation(path, body)
        elif (phone := _PHONE_PATH.fullmatch(path)) is not None and phone.group(2):
            self._reply_form(phone.group(1), body)
        else:
            self._graph_unknown_path(path)

    def _graph_unknown_path(self, path: str) -> None:
        """Graph's answer to a path it does not serve (404 outside a versioned path)."""
        status = errors.UNKNOWN_PATH.http_status if path.startswith("/v") else 404
        self._send_json(status, errors.error_envelope(errors.UNKNOWN_PATH, f"Unknown path components: {path[:100]}"))

    def _automation(self, path: str, body: bytes) -> None:
        # JSON only: a browser cannot send it cross-site without a preflight this server never allows.
        if self.headers.get_content_type() != "application/json":
            self._send_json(415, {"error": "send application/json"})
            return
        api = self.server.api
        if path == "/_sim/reset":
            api.reset()
            self._send_json(200, {"reset": True})
            return
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        fields = payload if isinstance(payload, dict) else {}
        sender, text, number = fields.get("from"), fields.get("text"), fields.get("phone_number_id")
        name, forwarded = fields.get("name", "Warga"), fields.get("forwarded", False)
        if not all(isinstance(value, str) for value in (sender, text, number, name)) or not isinstance(forwarded, bool):
            self._send_json(400, {"error": 'expected {"from", "text", "phone_number_id", "name"?, "forwarded"?}'})
            return
        self._send_json(
            *api.inbound(
                phone_number_id=str(number),
                wa_id=str(sender).removeprefix("+"),
                text=str(text),
                name=str(name),
                forwarded=forwarded,
            )
        )

    def _reply_form(self, wa_id: str, body: bytes) -> None:
        if not self._same_origin() or self.headers.get_content_type() != "application/x-www-form-urlencoded":
            self._send(403, "text/plain; charset=utf-8", b"forms are accepted from this simulator's pages only")
            return
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        status, answer = self.server.api.inbound(
            phone_number_id=form.get("phone_number_id", [""])[-1],
            wa_id=wa_id,
            text=form.get("text", [""])[-1].strip(),
            name=form.get("name", ["Warga"])[-1].strip(),
            forwarded=form.get("forwarded", [""])[-1] == "1",
        )
        if status != 200:  # noqa: PLR2004
            self._send(status, "text/plain; charset=utf-8", str(answer.get("error", "refused")).encode())
            return
        self._send(303, "text/plain; charset=utf-8", b"sent", Location=f"/phone/{quote(wa_id)}")
