"""The gateway's pages: each recipient's phone screen, and JSON for automation.

``/`` lists the recipients (newest first) and the magic numbers;
``/phone/<number>`` shows that phone's screen: the sender ID each text came
from, the texts, and what the gateway reported for each;
``/messages.json`` lists messages (``?limit=N``, newest 200 by default);
``/_sim/received.json`` counts the copies of each (To, Body), so that a
benchmark can count duplicates. Everything shown is escaped; the pages run
no script (Content-Security-Policy ``default-src 'none'``).
"""

from __future__ import annotations

import json
from html import escape
from urllib.parse import parse_qs, quote, unquote

from django.utils import timezone

from cakra.security.identifiers import ascii_int_parse
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsgateway.server import Answer
from cakra.simulators.smsgateway.store import GatewayMessage, MessageStore

LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
HTML = "text/html; charset=utf-8"

# What each magic number does here (cakra.simulators.magic; docs/providers.md).
MAGIC_BEHAVIOUR: dict[Magic, str] = {
    Magic.TEMPORARY: "503, code 20503 (service unavailable): retried",
    Magic.PERMANENT: "400, code 21610 (recipient unsubscribed): refused for good",
    Magic.THROTTLED: "429, code 20429 (too many requests), Retry-After: 1",
    Magic.NOT_ON_WHATSAPP: "accepted, then sent and delivered (SMS reaches it)",
    Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE: "accepted, then sent and undelivered (ErrorCode 30003)",
    Magic.NO_RECEIPT: "accepted, then sent only: never delivered",
    Magic.DELIVERED: "accepted, then sent and delivered",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #d5d9e0;padding:.4rem;text-align:left}"
    ".phone{max-width:24rem;border:10px solid #1b1f24;border-radius:2rem;padding:1rem;background:#f4f5f7}"
    ".sender{font-weight:bold;text-align:center;border-bottom:1px solid #d5d9e0;padding-bottom:.5rem}"
    ".bubble{background:#fff;border-radius:1rem;padding:.6rem .8rem;margin:.8rem 0;white-space:pre-wrap}"
    ".meta{font-size:.8rem;color:#5b6470}.failed{color:#b02a37}.delivered{color:#1e7e34}"
)


def _page(title: str, body: str) -> Answer:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return Answer(200, html.encode(), HTML)


def _limit(query: str) -> int | None:
    values = parse_qs(query).get("limit")
    if not values:
        return LIST_LIMIT_DEFAULT
    limit = ascii_int_parse(values[-1])
    return limit if limit is not None and 1 <= limit <= LIST_LIMIT_MAX else None


def _when(message: GatewayMessage) -> str:
    return timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")


def _status_html(message: GatewayMessage) -> str:
    status = message.status
    css = "failed" if status in {"undelivered", "failed"} else "delivered" if status == "delivered" else ""
    code = f" (ErrorCode {message.error_code})" if message.error_code is not None else ""
    return f'<span class="{css}">{escape(status)}{escape(code)}</span>'


def page(store: MessageStore, path: str, query: str, *, counts: dict[str, int]) -> Answer | None:
    """The answer for a GET of ``path``; None for an unknown path (404)."""
    if path == "/":
        return _index(store, counts=counts)
    if path == "/messages.json":
        limit = _limit(query)
        if limit is None:
            return Answer(400, f"limit must be 1..{LIST_LIMIT_MAX}".encode(), "text/plain; charset=utf-8")
        listed = [message.as_json() for message in store.messages(limit=limit)]
        return Answer(200, json.dumps(listed, ensure_ascii=False).encode())
    if path == "/_sim/received.json":
        return Answer(200, json.dumps({**store.received(), **counts}).encode())
    if path.startswith("/phone/"):
        return _phone(store, unquote(path.removeprefix("/phone/")))
    return None


def _index(store: MessageStore, *, counts: dict[str, int]) -> Answer:
    rows = "".join(
        f'<tr><td><a href="/phone/{quote(number, safe="")}">{escape(number)}</a></td><td>{total}</td>'
        f"<td>{escape(newest.sender)}</td><td>{_status_html(newest)}</td><td>{escape(_when(newest))}</td></tr>"
        for number, total, newest in store.recipients()
    )
    magic = "".join(
        f"<li><code>{escape(magic_number(behaviour))}</code>…: {escape(text)}</li>"
        for behaviour, text in MAGIC_BEHAVIOUR.items()
    )
    body = (
        "<h1>Cakra SMS gateway (Twilio-style simulator)</h1>"
        f"<p>{store.count()} messages accepted over {counts.get('connections', 0)} connections. "
        'Automation: <a href="/messages.json">/messages.json</a>, '
        '<a href="/_sim/received.json">/_sim/received.json</a>.</p>'
        f"<p>Magic numbers (any digits may follow the prefix):</p><ul>{magic}</ul>"
        "<table><thead><tr><th>Phone</th><th>Texts</th><th>Last sender</th><th>Last status</th><th>Last text</th>"
        f"</tr></thead><tbody>{rows or '<tr><td colspan=5>No messages yet.</td></tr>'}</tbody></table>"
    )
    return _page("Cakra SMS gateway", body)


def _phone(store: MessageStore, number: str) -> Answer | None:
    messages = list(reversed(store.messages(to=number)))  # oldest first, as a phone shows them
    if not messages:
        return None
    bubbles = "".join(
        f'<div class="sender">{escape(message.sender)}</div>'
        f'<div class="bubble">{escape(message.body)}</div>'
        f'<div class="meta">{escape(_when(message))} · {message.segments} segment(s) · {_status_html(message)}'
        f" · {escape(message.sid)}</div>"
        for message in messages
    )
    body = f'<p><a href="/">← all phones</a></p><h1>{escape(number)}</h1><div class="phone">{bubbles}</div>'
    return _page(f"SMS to {number}", body)
