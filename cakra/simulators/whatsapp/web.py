"""The simulator's pages: the recipients, and each recipient's phone screen.

The phone screen shows the conversation as the citizen sees it: the
business's verified name with its verified mark, each message's text with its
ticks (sent, delivered, read, or failed), the citizen's own messages, and a
form to reply as the citizen (or forward a text), which reaches Cakra as an
inbound message. Everything shown is escaped; the pages load nothing and run
no script (see ``PAGE_CSP``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from html import escape
from urllib.parse import quote

from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.whatsapp.api import CloudApi
from cakra.simulators.whatsapp.store import InboundMessage, OutboundMessage

PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
RECIPIENTS_SHOWN = 500
_WIB = timezone(timedelta(hours=7), "WIB")  # Indonesia's western time: what a Jakarta phone shows
_TICKS = {
    "accepted": ("🕓", "pending"),
    "sent": ("✓", "sent"),
    "delivered": ("✓✓", "delivered"),
    "read": ("✓✓", "read"),
    "failed": ("⚠ not delivered", "failed"),
}
_MAGIC_NOTES = {
    Magic.TEMPORARY: "refused with 131000 (HTTP 500): retry later",
    Magic.PERMANENT: "refused with 131026 (HTTP 400): message undeliverable",
    Magic.NOT_ON_WHATSAPP: "accepted, then a failed status with 131026 (not a WhatsApp user)",
    Magic.THROTTLED: "refused with 130429 (HTTP 400): rate limit hit",
    Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE: "accepted, then a failed status with 131026",
    Magic.NO_RECEIPT: "accepted, sent, then never delivered or read",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #d5d9e0;padding:.35rem .6rem;text-align:left}"
    ".phone{max-width:26rem;border:1px solid #c8ccd2;border-radius:1.2rem;overflow:hidden;background:#efeae2}"
    ".bar{background:#075e54;color:#fff;padding:.8rem 1rem}.bar small{opacity:.85}"
    ".verified{display:inline-block;background:#25d366;color:#fff;border-radius:50%;width:1.1em;height:1.1em;"
    "text-align:center;font-size:.8em;line-height:1.1em;margin-left:.3em}"
    ".chat{padding:.8rem;min-height:10rem}.msg{max-width:85%;margin:.4rem 0;padding:.45rem .6rem;border-radius:.6rem;"
    "white-space:pre-wrap;word-wrap:break-word;box-shadow:0 1px 1px #0002}"
    ".in{background:#fff}.out{background:#d9fdd3;margin-left:auto}.meta{font-size:.75em;color:#667781;text-align:right}"
    ".read{color:#53bdeb}.failed{color:#b02a37}.fwd{font-size:.75em;color:#667781;font-style:italic}"
    ".from{font-size:.75em;color:#667781}form{padding:.8rem;background:#f0f2f5}textarea{width:100%;box-sizing:border-box}"
)


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="id"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).astimezone(_WIB).strftime("%Y-%m-%d %H:%M %Z")


def index_page(api: CloudApi, *, limit: int) -> str:
    numbers = "".join(
        f"<tr><td><code>{escape(number.phone_number_id)}</code></td><td>{escape(number.display_phone_number)}</td>"
        f'<td>{escape(number.verified_name)}<span class="verified" title="verified">✓</span></td></tr>'
        for number in api.business_numbers.values()
    )
    magic = "".join(
        f"<li><code>{escape(magic_number(behaviour))}</code> (and any number after it) → {escape(note)}</li>"
        for behaviour, note in _MAGIC_NOTES.items()
    )
    templates = "".join(
        f"<tr><td><code>{escape(t.name)}</code></td><td>{escape(t.language)}</td><td>{escape(t.category)}</td>"
        f"<td>{escape(t.status)}</td><td>{escape(t.body)}</td></tr>"
        for t in api.templates.all()
    )
    recipients = "".join(
        f'<tr><td><a href="/phone/{quote(wa_id)}">+{escape(wa_id)}</a></td><td>{count}</td>'
        f"<td>{escape(_clock(moment))}</td></tr>"
        for wa_id, count, moment in api.store.recipients(limit=min(limit, RECIPIENTS_SHOWN))
    )
    webhooks = api.webhooks
    reporting = (
        f"<p>Webhooks: signed posts to <code>{escape(webhooks.url)}</code> "
        f"({escape(', '.join(f'{key} {value}' for key, value in sorted(webhooks.counts.items())) or 'none yet')}).</p>"
        if webhooks is not None
        else "<p>Webhooks: off (no webhook URL configured).</p>"
    )
    body = (
        "<h1>Cakra WhatsApp Cloud API simulator</h1>"
        f"<p>Accepted {api.store.accepted} messages. Automation: "
        '<a href="/messages.json">/messages.json</a>, <a href="/_sim/received.json">/_sim/received.json</a>.</p>'
        f"{reporting}"
        "<h2>Business numbers</h2><table><thead><tr><th>phone_number_id</th><th>Number</th><th>Verified name</th>"
        f"</tr></thead><tbody>{numbers}</tbody></table>"
        f"<h2>Magic test numbers</h2><ul>{magic}</ul><p>Every other number: sent, delivered, read.</p>"
        "<h2>Recipients</h2><table><thead><tr><th>Phone</th><th>Messages</th><th>Last</th></tr></thead>"
        f"<tbody>{recipients or '<tr><td colspan=3>No messages yet.</td></tr>'}</tbody></table>"
        "<h2>Templates</h2><table><thead><tr><th>Name</th><th>Language</th><th>Category</th><th>Status</th>"
        f"<th>Body</th></tr></thead><tbody>{templates}</tbody></table>"
    )
    return _page("Cakra WhatsApp simulator", body)


def phone_page(api: CloudApi, wa_id: str) -> str:
    entries = api.store.conversation(wa_id)
    # The business this citizen talks to: the number of the latest message, else the first configured.
    numbers = api.business_numbers
    phone_number_id = next(
        (entry.phone_number_id for entry, _, _ in reversed(entries) if entry.phone_number_id in numbers),
        next(iter(numbers), ""),
    )
    business = numbers.get(phone_number_id)
    name = business.verified_name if business is not None else "?"
    display = business.display_phone_number if business is not None else ""
    bubbles = []
    for entry, status, errors in entries:
        if isinstance(entry, OutboundMessage):
            tick, css = _TICKS.get(status, ("", ""))
            codes = ", ".join(str(error.get("code", "")) for error in errors)
            reason = f" ({escape(codes)})" if codes else ""
            label = "text"
            if entry.kind == "template":
                label = f"template {entry.template_name} ({entry.template_language})"
            bubbles.append(
                f'<div class="msg out"><div class="from">{escape(label)}</div>{escape(entry.text)}'
                f'<div class="meta">{escape(_clock(entry.sent_at))} <span class="{css}" title="{css}">'
                f"{escape(tick)}{reason}</span></div></div>"
            )
        elif isinstance(entry, InboundMessage):
            forwarded = '<div class="fwd">↪ Diteruskan / Forwarded</div>' if entry.forwarded else ""
            bubbles.append(
                f'<div class="msg in">{forwarded}{escape(entry.text)}'
                f'<div class="meta">{escape(_clock(entry.received_at))}</div></div>'
            )
    choices = "".join(
        f'<option value="{escape(number.phone_number_id)}"'
        f"{' selected' if number.phone_number_id == phone_number_id else ''}>"
        f"{escape(number.verified_name)} ({escape(number.display_phone_number)})</option>"
        for number in numbers.values()
    )
    body = (
        '<p><a href="/">← semua penerima / all recipients</a></p>'
        f"<h1>+{escape(wa_id)}</h1>"
        '<div class="phone">'
        f'<div class="bar"><strong>{escape(name)}</strong><span class="verified" title="Akun bisnis terverifikasi / '
        f'verified business account">✓</span><br><small>{escape(display)} · Akun bisnis resmi</small></div>'
        f'<div class="chat">{"".join(bubbles) or "<p>Belum ada pesan. / No messages yet.</p>"}</div>'
        f'<form method="post" action="/phone/{quote(wa_id)}/reply">'
        f'<label>Ke / To <select name="phone_number_id">{choices}</select></label><br>'
        '<label>Nama profil / Profile name <input name="name" value="Warga" maxlength="100"></label><br>'
        '<textarea name="text" rows="3" maxlength="4096" required placeholder="Ketik balasan… / Type a reply…">'
        "</textarea><br>"
        '<label><input type="checkbox" name="forwarded" value="1"> Teruskan / forwarded</label> '
        "<button>Kirim / Send</button></form></div>"
    )
    return _page(f"+{wa_id}", body)
