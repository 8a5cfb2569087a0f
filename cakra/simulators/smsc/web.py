"""The SMSC simulator's pages, on loopback: each recipient's phone screen.

``/`` lists recipients (and the magic numbers), ``/phones/<digits>`` shows
one phone's SMS inbox as the handset would (the sender ID it displays, the
reassembled texts, each one's receipt status), ``/messages.json`` lists the
texts for automation (``?limit=N``, newest 200 by default) and
``/_sim/received.json`` counts copies per (recipient, text digest).
"""

from __future__ import annotations

import json
import re
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, urlsplit

from django.utils import timezone

from cakra.simulators.loopback import LOOPBACK, PAGE_CSP, PAGE_HEADERS, host_header_is_loopback, list_limit
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc.store import SmscStore, SmsMessage

LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
_PHONE_PATH = re.compile(r"/phones/(\d{6,15})")
MAGIC_ANSWERS = {
    Magic.TEMPORARY: "submit_sm_resp ESME_RSYSERR (temporary)",
    Magic.PERMANENT: "submit_sm_resp ESME_RINVDSTADR (permanent)",
    Magic.THROTTLED: "submit_sm_resp ESME_RTHROTTLED",
    Magic.NOT_ON_WHATSAPP: "delivered (stat:DELIVRD)",
    Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE: "accepted, then stat:UNDELIV",
    Magic.NO_RECEIPT: "accepted, never a receipt",
}


class WebServer:
    def __init__(self, *, store: SmscStore, port: int) -> None:
        self._http = _SmscHTTPServer(store=store, port=port)
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="cakra-smsc-http", daemon=True
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


class _SmscHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, store: SmscStore, port: int) -> None:
        self.store = store
        super().__init__((LOOPBACK, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _SmscHTTPServer
    server_version = "CakraSMSC"
    sys_version = ""

    def do_GET(self) -> None:
        # Loopback names only: a page that rebinds its domain to 127.0.0.1 must not read the texts.
        if not host_header_is_loopback(self.headers.get("Host", "")):
            self._send(421, "text/plain; charset=utf-8", b"misdirected request")
            return
        url = urlsplit(self.path)
        store = self.server.store
        if url.path == "/":
            self._send(200, "text/html; charset=utf-8", index_page(store).encode())
        elif url.path == "/messages.json":
            limit = list_limit(url.query, default=LIST_LIMIT_DEFAULT, maximum=LIST_LIMIT_MAX)
            if limit is None:
                self._send(400, "text/plain; charset=utf-8", f"limit must be 1..{LIST_LIMIT_MAX}".encode())
                return
            body = json.dumps([m.as_json() for m in store.messages(limit=limit)], ensure_ascii=False)
            self._send(200, "application/json", body.encode())
        elif url.path == "/_sim/received.json":
            self._send(200, "application/json", json.dumps(store.received()).encode())
        elif (phone := _PHONE_PATH.fullmatch(url.path)) is not None:
            self._send(200, "text/html; charset=utf-8", phone_page(store, phone.group(1)).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in PAGE_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Security-Policy", PAGE_CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: the console is the command's."""


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #d5d9e0;padding:.4rem;text-align:left}"
    ".phone{max-width:24rem;border:2px solid #333;border-radius:1.5rem;padding:1rem;background:#f4f5f7}"
    ".sender{font-weight:bold;text-align:center;border-bottom:1px solid #ccc;padding-bottom:.5rem}"
    ".sms{background:#fff;border-radius:.8rem;padding:.6rem;margin:.6rem 0;white-space:pre-wrap}"
    ".meta{color:#666;font-size:.8rem}"
)


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _local(message: SmsMessage) -> str:
    return timezone.localtime(message.submitted_at).strftime("%Y-%m-%d %H:%M:%S")


def index_page(store: SmscStore) -> str:
    rows = "".join(
        f'<tr><td><a href="/phones/{quote(recipient)}">+{escape(recipient)}</a></td><td>{count}</td>'
        f"<td>{escape(latest.sender)}</td><td>{escape(_local(latest))}</td><td>{escape(latest.status)}</td></tr>"
        for recipient, count, latest in store.recipients()
    )
    magic = "".join(
        f"<li><code>{escape(magic_number(behaviour))}</code>… → {escape(answer)}</li>"
        for behaviour, answer in MAGIC_ANSWERS.items()
    )
    body = (
        "<h1>Cakra SMSC simulator (SMPP v3.4)</h1>"
        f"<p>Magic test numbers (any digits may follow the behaviour digit):</p><ul>{magic}</ul>"
        "<p>Every other number: accepted, then <code>stat:DELIVRD</code>. "
        'Automation: <a href="/messages.json">/messages.json</a>, '
        '<a href="/_sim/received.json">/_sim/received.json</a>.</p>'
        "<table><thead><tr><th>Phone</th><th>Texts</th><th>Last sender</th><th>Last</th><th>Status</th></tr>"
        f"</thead><tbody>{rows or '<tr><td colspan=5>No messages yet.</td></tr>'}</tbody></table>"
    )
    return _page("Cakra SMSC simulator", body)


def phone_page(store: SmscStore, recipient: str) -> str:
    messages = list(reversed(store.messages(recipient=recipient)))  # oldest first, as a phone shows them
    by_sender: dict[str, list[SmsMessage]] = {}
    for message in messages:
        by_sender.setdefault(message.sender, []).append(message)
    threads = "".join(
        f'<div class="phone"><div class="sender">{escape(sender)}</div>'
        + "".join(
            f'<div class="sms">{escape(message.text)}'
            f'<div class="meta">{escape(_local(message))} · {message.parts} part(s) · {escape(message.status)}'
            "</div></div>"
            for message in texts
        )
        + "</div>"
        for sender, texts in by_sender.items()
    )
    body = (
        '<p><a href="/">← all phones</a></p>'
        f"<h1>+{escape(recipient)}</h1>"
        f"{threads or '<p>No messages for this phone.</p>'}"
    )
    return _page(f"+{recipient}", body)
