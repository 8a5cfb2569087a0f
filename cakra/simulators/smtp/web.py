"""The sink's web pages, served on loopback by the standard library's HTTP server.

``/`` lists messages newest first with their DKIM verdict,
``/messages/<id>`` shows one (headers and text body), ``/messages/<id>/raw``
returns its bytes and ``/messages.json`` lists them for automation (both
lists take ``?limit=N``, newest 200 by default).
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from django.utils import timezone

from cakra.simulators.loopback import LOOPBACK, PAGE_CSP, PAGE_HEADERS, host_header_is_loopback, list_limit
from cakra.simulators.smtp.dns import DkimVerdict
from cakra.simulators.smtp.recipients import SIMULATED_RCPT_REPLIES, SIMULATED_REPORTS
from cakra.simulators.smtp.store import MailStore, SinkMessage

LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
HTTP_POLL_SECONDS = 0.05  # how quickly stop() ends the HTTP thread


class WebServer:
    """The pages' listening socket (bound at once: a port in use fails here)
    and the thread serving it, from ``start()`` to ``stop()``."""

    def __init__(self, *, store: MailStore, port: int, dkim_selector: str, receipt_url: str) -> None:
        self._http = _SinkHTTPServer(store=store, port=port, dkim_selector=dkim_selector, receipt_url=receipt_url)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": HTTP_POLL_SECONDS},
            name="cakra-sink-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which must be running
            self._http.shutdown()
        self._http.server_close()


class _SinkHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, store: MailStore, port: int, dkim_selector: str, receipt_url: str) -> None:
        self.store = store
        self.dkim_selector = dkim_selector
        self.receipt_url = receipt_url  # "" when the sink reports no receipts
        super().__init__((LOOPBACK, port), _SinkRequestHandler)


class _SinkRequestHandler(BaseHTTPRequestHandler):
    server: _SinkHTTPServer
    server_version = "CakraSink"
    sys_version = ""

    def do_GET(self) -> None:
        # Loopback only, and only under a loopback name: a web page that
        # rebinds its own domain to 127.0.0.1 must not read the messages.
        if not host_header_is_loopback(self.headers.get("Host", "")):
            self._send(421, "text/plain; charset=utf-8", b"misdirected request")
            return
        url = urlsplit(self.path)
        path, store = url.path, self.server.store
        if path in {"/", "/messages.json"}:
            limit = list_limit(url.query, default=LIST_LIMIT_DEFAULT, maximum=LIST_LIMIT_MAX)
            if limit is None:
                self._send(400, "text/plain; charset=utf-8", f"limit must be 1..{LIST_LIMIT_MAX}".encode())
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", _index_page(self.server, limit=limit).encode())
            else:
                listed = [m.as_json() for m in store.messages(limit=limit)]
                self._send(200, "application/json", json.dumps(listed, ensure_ascii=False).encode())
            return
        match = re.fullmatch(r"/messages/([^/]+?)(/raw)?", path)
        message = store.message(unquote(match.group(1))) if match else None
        if match is None or message is None:
            self._send(404, "text/plain; charset=utf-8", b"not found")
        elif match.group(2):
            self._send(200, "message/rfc822", message.raw)
        else:
            self._send(200, "text/html; charset=utf-8", _message_page(message).encode())

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
        """Quiet: one stderr line per request would drown the ``cakra sink`` console."""


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #d5d9e0;padding:.4rem;text-align:left;"
    "vertical-align:top}.pass{color:#1e7e34;font-weight:bold}.fail{color:#b02a37;font-weight:bold}"
    "pre{white-space:pre-wrap;background:#f4f5f7;padding:1rem}.note{background:#fff8e1;padding:.6rem 1rem}"
)


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _verdict_html(verdict: DkimVerdict) -> str:
    if verdict.passed:
        return f'<span class="pass">DKIM pass</span> (d={escape(verdict.domain)})'
    return f'<span class="fail">DKIM fail</span>{f" (d={escape(verdict.domain)})" if verdict.domain else ""}'


def _local(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


def _index_page(server: _SinkHTTPServer, *, limit: int) -> str:
    store = server.store
    total = store.count()
    rows = "".join(
        f"<tr><td>{escape(_local(m.received_at))}</td><td>{escape(m.sender)}</td><td>{escape(m.recipients)}</td>"
        f'<td><a href="/messages/{quote(m.id)}">{escape(m.subject) or "(no subject)"}</a></td>'
        f"<td>{_verdict_html(m.dkim)}</td></tr>"
        for m in store.messages(limit=limit)
    )
    replies = "".join(
        f"<li><code>{escape(prefix)}…@…</code> → <code>{escape(reply)}</code></li>"
        for prefix, reply in SIMULATED_RCPT_REPLIES
    )
    reports = "".join(
        f"<li><code>{escape(prefix)}…@…</code> → accepted, then reported "
        f"<code>{escape(', '.join(event for event, _ in events))}</code></li>"
        if events
        else f"<li><code>{escape(prefix)}…@…</code> → accepted, never reported</li>"
        for prefix, events in SIMULATED_REPORTS
    )
    receipts = (
        f"<p>Receipts: every stored message is reported <code>delivered</code> to "
        f"<code>{escape(server.receipt_url)}</code> (signed), except:</p><ul>{reports}</ul>"
        if server.receipt_url
        else '<p>Receipts: not reported (no <code>CAKRA_SINK["RECEIPT_URL"]</code>).</p>'
    )
    selector = escape(server.dkim_selector)
    body = (
        "<h1>Cakra SMTP sink</h1>"
        f'<p class="note">DKIM is verified against a <strong>simulated DNS</strong>: the lookup of '
        f"<code>{selector}._domainkey.&lt;domain&gt;</code> is answered with the public key derived from the "
        'configured <code>CAKRA_EMAIL["DKIM_PRIVATE_KEY"]</code>, as if every sender domain published the record '
        "<code>cakra dkim dns-record</code> prints. Real receivers query real DNS.</p>"
        f"<p>Recipients that make the sink refuse, like a real relay would:</p><ul>{replies}</ul>"
        f"{receipts}"
        f"<p>Stored in <code>{escape(str(store.path))}</code> (Maildir). "
        f"Showing the newest {min(limit, total)} of {total} (<code>?limit=</code> up to {LIST_LIMIT_MAX}). "
        'Automation: <a href="/messages.json">/messages.json</a> (same <code>limit</code>).</p>'
        "<table><thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th><th>DKIM</th></tr></thead>"
        f"<tbody>{rows or '<tr><td colspan=5>No messages yet.</td></tr>'}</tbody></table>"
    )
    return _page("Cakra SMTP sink", body)


def _message_page(message: SinkMessage) -> str:
    parsed = message.parsed()
    headers = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>" for name, value in parsed.items()
    )
    parts = "".join(
        f"<li><code>{escape(part.get_content_type())}</code>"
        f"{' (attachment)' if part.get_content_disposition() == 'attachment' else ''}</li>"
        for part in parsed.walk()
    )
    body = (
        '<p><a href="/">← all messages</a> · '
        f'<a href="/messages/{quote(message.id)}/raw">raw message</a></p>'
        f"<h1>{escape(message.subject) or '(no subject)'}</h1>"
        f"<p>{_verdict_html(message.dkim)} · received {escape(_local(message.received_at))}</p>"
        f"<h2>Headers</h2><table>{headers}</table>"
        f"<h2>MIME structure</h2><ul>{parts}</ul>"
        f"<h2>Text body</h2><pre>{escape(message.text_body())}</pre>"
    )
    return _page(message.subject or "message", body)
