"""A local SMTP relay that keeps every message: the email channel's simulator.

``MailSink`` runs two loopback servers in background threads:

- SMTP on 127.0.0.1 (a small asyncio server; ESMTP with SIZE, 8BITMIME and
  PIPELINING), storing each accepted message byte for byte, as received, as
  one file in a Maildir (open it with any mail client);
- HTTP (standard library) on 127.0.0.1: ``/`` lists messages newest first with
  their DKIM verdict, ``/messages/<id>`` shows one (headers and text body),
  ``/messages/<id>/raw`` returns its bytes and ``/messages.json`` lists them
  for automation (both lists take ``?limit=N``, newest 200 by default).

DKIM is verified with dkimpy against a **simulated DNS**: the lookup of
``<selector>._domainkey.<domain>`` is answered with the public key derived from
the configured private key, as if every sender domain published the record
``cakra dkim dns-record`` prints. A message changed after signing, or signed
with another key, fails.

Some recipient addresses make the sink answer like a real relay that refuses
(the Notify "magic numbers" idea), so failure paths can be shown and tested:
a local part starting with ``bounce`` gets ``550`` (no such mailbox),
``throttle`` gets ``451`` (rate limited), ``tempfail`` gets ``450``.

**Receipts.** Given a receipt URL and secret (``CAKRA_SINK["RECEIPT_URL"]``,
``["RECEIPT_SECRET"]``), the sink also plays the provider's event webhook:
for every message it stores it reports ``delivered`` to Cakra's signed
receipt endpoint, keyed by the message's Message-ID (the reference the
email adapter returned). Some accepted recipients are reported otherwise,
later, as real providers do: ``softbounce…`` is accepted at RCPT and then
reported ``bounced`` (an asynchronous bounce), ``opened…`` is reported
``delivered`` and then ``opened``, ``silent…`` is never reported. Two
background threads post the events in
batches (every 200 ms or 500 events, whichever comes first), retrying with
backoff while the web server is down or answers 5xx; events the endpoint
does not recognise yet (the worker had not recorded the send when the
report arrived) are reported again a few times, then given up.

Use it in tests as a context manager; ports 0 pick free ones::

    with MailSink(maildir=tmp_path / "mail", dkim_private_key=pem, dkim_selector="s1") as sink:
        ...  # send to 127.0.0.1:sink.smtp_port, then read sink.messages()
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import heapq
import itertools
import json
import mailbox
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

import dkim
import structlog
from django.conf import settings
from django.utils import timezone

from cakra.delivery.channels.dkim import DkimKey, dkim_key_load
from cakra.security.identifiers import ascii_digits_check, ascii_int_parse
from cakra.security.signing import SIGNATURE_HEADER, receipt_signature_header

logger = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"
# Local part prefix -> the reply a refusing relay would give at RCPT TO.
SIMULATED_RCPT_REPLIES = (
    ("bounce", "550 5.1.1 Mailbox unavailable"),
    ("throttle", "451 4.7.1 Rate limit exceeded, too many messages, try again later"),
    ("tempfail", "450 4.2.1 Mailbox temporarily unavailable"),
)
KEY_PATTERN = re.compile(r"[A-Za-z0-9._\-\\]+")
MAILDIR_NAME = re.compile(r"(\d+)\.M(\d+)P(\d+)Q(\d+)")
# The receipt endpoint's pattern for a reference (cakra.api.receipts): a
# Message-ID outside it would make the endpoint refuse the whole batch.
REPORTABLE_REFERENCE = re.compile(r"[\x21-\x7e]{1,128}")
LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
HTTP_POLL_SECONDS = 0.05  # how quickly stop() ends the HTTP thread
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
# Local part prefix -> the events reported, with their delay after storage in
# seconds. Any other accepted recipient is reported delivered at once.
SIMULATED_REPORTS: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("softbounce", (("bounced", 0.5),)),
    ("opened", (("delivered", 0.0), ("opened", 0.5))),
    # Stored, never reported: a relay that sends no events for this message
    # (the bench's bare client uses it, so measuring the relay alone does not
    # load the system under test with receipts for messages it never sent).
    ("silent", ()),
)
DELIVERED_REPORT: tuple[tuple[str, float], ...] = (("delivered", 0.0),)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _arrival_order(key: str) -> tuple[int, int, int, int, str]:
    """Maildir names start ``<seconds>.M<microseconds>P<pid>Q<count>``: the
    delivery order, known without reading the files."""
    match = MAILDIR_NAME.match(key)
    if match is None:  # a file dropped in by hand
        return (0, 0, 0, 0, key)
    seconds, micros, pid, count = (int(group) for group in match.groups())
    return (seconds, micros, pid, count, key)


class SimulatedDkimDns:
    """A ``dnsfunc`` for dkimpy: answers ``<selector>._domainkey.<domain>`` TXT
    lookups with the record of the configured key, and nothing else."""

    def __init__(self, *, key: DkimKey, selector: str) -> None:
        self._prefix = f"{selector.lower()}._domainkey."
        self._record = key.txt_value().encode("ascii")

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".").lower()
        if text.startswith(self._prefix) and len(text) > len(self._prefix):
            return self._record
        return None


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    passed: bool
    domain: str


def dkim_check(raw: bytes, *, dns: SimulatedDkimDns) -> DkimVerdict:
    """Verify the first DKIM signature of ``raw`` against the simulated DNS."""
    checker = dkim.DKIM(raw)
    try:
        passed = bool(checker.verify(dnsfunc=dns))
    except dkim.DKIMException:
        passed = False
    domain = checker.domain.decode("ascii", "replace") if isinstance(checker.domain, bytes) else ""
    return DkimVerdict(passed=passed, domain=domain)


@dataclass(frozen=True, slots=True)
class SinkMessage:
    id: str
    received_at: datetime
    sender: str
    recipients: str
    subject: str
    dkim: DkimVerdict
    raw: bytes = field(repr=False)

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(message, EmailMessage)  # noqa: S101 - the default policy builds EmailMessage
        return message

    def text_body(self) -> str:
        part = self.parsed().get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""

    def html_body(self) -> str:
        part = self.parsed().get_body(preferencelist=("html",))
        return str(part.get_content()) if part is not None else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.recipients,
            "subject": self.subject,
            "dkim_pass": self.dkim.passed,
            "dkim_domain": self.dkim.domain,
            "received_at": self.received_at.isoformat(),
        }


class _SinkHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: MailSink, port: int) -> None:
        self.sink = sink
        super().__init__((LOOPBACK, port), _SinkRequestHandler)


class _SinkRequestHandler(BaseHTTPRequestHandler):
    server: _SinkHTTPServer
    server_version = "CakraSink"
    sys_version = ""

    def do_GET(self) -> None:
        # Loopback only, and only under a loopback name: a web page that
        # rebinds its own domain to 127.0.0.1 must not read the messages.
        host_header = self.headers.get("Host", "")
        name, _, port = host_header.rpartition(":")
        if (name if ascii_digits_check(port) else host_header) not in {LOOPBACK, "localhost"}:
            self._send(421, "text/plain; charset=utf-8", b"misdirected request")
            return
        url = urlsplit(self.path)
        path, sink = url.path, self.server.sink
        if path in {"/", "/messages.json"}:
            limit = _list_limit(url.query)
            if limit is None:
                self._send(400, "text/plain; charset=utf-8", f"limit must be 1..{LIST_LIMIT_MAX}".encode())
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", _index_page(sink, limit=limit).encode())
            else:
                listed = [m.as_json() for m in sink.messages(limit=limit)]
                self._send(200, "application/json", json.dumps(listed, ensure_ascii=False).encode())
            return
        match = re.fullmatch(r"/messages/([^/]+?)(/raw)?", path)
        message = sink.message(unquote(match.group(1))) if match else None
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
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", PAGE_CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: one stderr line per request would drown the ``cakra sink`` console."""


class MailSink:
    """The SMTP sink and its web view. Start with ``start()`` or ``with``."""

    def __init__(
        self,
        *,
        maildir: Path,
        dkim_private_key: str,
        dkim_selector: str,
        smtp_port: int = 0,
        http_port: int = 0,
        receipt_url: str = "",
        receipt_secret: str = "",
        reply_delay: float = 0.0,
    ) -> None:
        self.maildir_path = Path(maildir)
        # Seconds between storing a message and answering 250 (reliability tests).
        self.reply_delay = reply_delay
        # Reporting is off unless a receipt URL is given (from_settings gives
        # CAKRA_SINK["RECEIPT_URL"]).
        self.receipts = ReceiptReporter(url=receipt_url, secret=receipt_secret) if receipt_url else None
        self.dkim_selector = dkim_selector
        self._dns = SimulatedDkimDns(key=dkim_key_load(dkim_private_key), selector=dkim_selector)
        self._requested_smtp_port = smtp_port
        self._requested_http_port = http_port
        self._lock = threading.Lock()
        self._verdicts: dict[str, DkimVerdict] = {}
        self._maildir: mailbox.Maildir | None = None  # for reading; new messages are written directly
        self._smtp: _SmtpServer | None = None
        # Maildir file names: <seconds>.M<microseconds>P<pid>Q<count>.<host>, as mailbox writes them.
        self._name_suffix = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._name_count = itertools.count()
        self._http: _SinkHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, *, smtp_port: int | None = None, http_port: int | None = None) -> MailSink:
        sink_options: Mapping[str, Any] = settings.CAKRA_SINK
        email_options: Mapping[str, Any] = settings.CAKRA_EMAIL
        return cls(
            maildir=Path(sink_options["MAILDIR"]),
            dkim_private_key=email_options["DKIM_PRIVATE_KEY"],
            dkim_selector=email_options["DKIM_SELECTOR"],
            smtp_port=int(sink_options["SMTP_PORT"]) if smtp_port is None else smtp_port,
            http_port=int(sink_options["HTTP_PORT"]) if http_port is None else http_port,
            receipt_url=str(sink_options.get("RECEIPT_URL", "")),
            receipt_secret=str(sink_options.get("RECEIPT_SECRET", "")),
        )

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> Self:
        self.maildir_path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(self.maildir_path, create=True)  # creates tmp/, new/, cur/
        self._smtp = _SmtpServer(sink=self, port=self._requested_smtp_port)
        self._smtp.start()
        try:
            self._http = _SinkHTTPServer(self, self._requested_http_port)
        except OSError:
            self._smtp.stop()
            self._smtp = None
            raise
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": HTTP_POLL_SECONDS},
            name="cakra-sink-http",
            daemon=True,
        )
        self._http_thread.start()
        if self.receipts is not None:
            self.receipts.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None
        # After SMTP stopped: no new events, and the queued ones get a short
        # grace period to reach the endpoint.
        if self.receipts is not None:
            self.receipts.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def smtp_port(self) -> int:
        if self._smtp is None:
            raise RuntimeError("the sink is not running")
        return self._smtp.port

    @property
    def http_port(self) -> int:
        if self._http is None:
            raise RuntimeError("the sink is not running")
        return int(self._http.server_address[1])

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/"

    # --- storage ---------------------------------------------------------------
    def _box(self) -> mailbox.Maildir:
        if self._maildir is None:
            self._maildir = mailbox.Maildir(self.maildir_path, create=True)
        return self._maildir

    def deliver(self, *, sender: str, recipients: list[str], raw: bytes) -> bytes:
        """Store a message the SMTP server accepted and queue its receipts; the SMTP reply."""
        try:
            key = self.store(raw)
        except OSError as exc:  # e.g. the disk is full: a relay answers "try later"
            logger.error("sink_store_failed", error=type(exc).__name__)  # noqa: TRY400 - the type is enough
            return b"451 4.3.0 Error: message not stored, try again later"
        self.report_stored(key=key, raw=raw, recipients=recipients)
        return b"250 2.0.0 OK: stored"

    def store(self, raw: bytes) -> str:
        """Keep one message exactly as received, as a Maildir file in new/; returns its id.

        Written to tmp/ and renamed into new/, as Maildir requires, so a
        reader (or a crash of this process) never sees half a message. Unlike
        ``mailbox.Maildir.add`` there is no fsync: that guards against a power
        cut, not a process crash, and tripled the cost of a write here (about
        35 µs of CPU without it, 105 µs and 220 µs of blocking the SMTP loop
        with it); a simulator that loses its last messages with the machine
        loses nothing anyone relies on.
        """
        now = time.time()
        seconds = int(now)
        key = f"{seconds}.M{int((now - seconds) * 1e6)}P{os.getpid()}Q{next(self._name_count)}.{self._name_suffix}"
        temporary = os.path.join(self.maildir_path, "tmp", key)  # noqa: PTH118 - str paths: one fewer object per message
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(descriptor, view) :]
            finally:
                os.close(descriptor)
        except BaseException:
            os.unlink(temporary)  # noqa: PTH108
            raise
        os.rename(temporary, os.path.join(self.maildir_path, "new", key))  # noqa: PTH104, PTH118
        return key

    def report_stored(self, *, key: str, raw: bytes, recipients: list[str]) -> None:
        """Queue the receipts for a message just stored (nothing when reporting is off)."""
        if self.receipts is None:
            return
        reference = message_reference(raw)
        if not reference:
            logger.info("sink_receipt_skipped_no_message_id", key=key)
            return
        if not REPORTABLE_REFERENCE.fullmatch(reference):
            logger.info("sink_receipt_skipped_bad_message_id", key=key)
            return
        # Derived from the stored message's key: a report posted twice carries
        # the same event id, as a real provider's retry would.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        for event, delay in reports_for(recipients):
            self.receipts.report(message_id=reference, event=event, event_id=f"sink-{event}-{digest}", delay=delay)

    def message(self, message_id: str) -> SinkMessage | None:
        if not KEY_PATTERN.fullmatch(message_id):
            return None
        with self._lock:
            box = self._box()
            try:
                stored = box.get_message(message_id)
                raw = box.get_bytes(message_id)
            except KeyError:
                return None
        return self._describe(message_id, stored, raw)

    def count(self) -> int:
        with self._lock:
            return len(self._box())

    def messages(self, *, limit: int | None = None) -> list[SinkMessage]:
        """Stored messages, newest first; only the newest ``limit`` are read
        (a benchmark leaves a million messages here)."""
        with self._lock:
            box = self._box()
            keys = sorted(box.keys(), key=_arrival_order, reverse=True)[:limit]
            items = [(key, box.get_message(key), box.get_bytes(key)) for key in keys]
        return [self._describe(key, stored, raw) for key, stored, raw in items]

    def _describe(self, key: str, stored: mailbox.MaildirMessage, raw: bytes) -> SinkMessage:
        with self._lock:
            verdict = self._verdicts.get(key)
        if verdict is None:  # stored messages never change: verify each once
            verdict = dkim_check(raw, dns=self._dns)
            with self._lock:
                self._verdicts[key] = verdict
        headers = email.message_from_bytes(raw, policy=default_policy)
        return SinkMessage(
            id=key,
            received_at=datetime.fromtimestamp(stored.get_date(), tz=UTC),
            # A folded header keeps the fold's leading space: strip it for display.
            sender=str(headers.get("From", "")).strip(),
            recipients=str(headers.get("To", "")).strip(),
            subject=str(headers.get("Subject", "")).strip(),
            dkim=verdict,
            raw=raw,
        )


# --- the SMTP server -------------------------------------------------------------
# A small asyncio Protocol rather than aiosmtpd: aiosmtpd reads every DATA
# line through a coroutine (a StreamReader call, a debug log call and a list
# append per line), parses each address with the email package's header
# parser and awaits a drain after every reply; together that was most of the
# sink's CPU per message. Here the message data is found with one search for
# the end marker and unstuffed with one replace, and the replies to pipelined
# commands go out in one write.
SMTP_HOSTNAME = "sink.cakra.test"
SMTP_DATA_SIZE_LIMIT = 32 * 1024 * 1024  # advertised as SIZE; larger messages get 552
SMTP_COMMAND_LINE_LIMIT = 1024  # RFC 5321 allows 512 plus room for ESMTP parameters
SMTP_DATA_LINE_LIMIT = 998  # RFC 5321 4.5.3.1.6, without the CRLF
SMTP_RECIPIENTS_LIMIT = 100  # RFC 5321 4.5.3.1.8: the minimum a server must accept
SMTP_IDLE_SECONDS = 300.0
SMTP_SWEEP_SECONDS = 10.0
SMTP_BOGUS_LIMIT = 5  # unknown commands before the connection is dropped
_EHLO_REPLY = (
    f"250-{SMTP_HOSTNAME}\r\n250-SIZE {SMTP_DATA_SIZE_LIMIT}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 HELP"
).encode()
_DATA_END = b"\r\n.\r\n"
# The path in MAIL FROM / RCPT TO, with or without angle brackets, then parameters.
_MAIL_FROM = re.compile(r"FROM:\s*(<[^<>]*>|[^\s<>]+)(.*)", re.IGNORECASE | re.DOTALL)
_RCPT_TO = re.compile(r"TO:\s*(<[^<>]*>|[^\s<>]+)(.*)", re.IGNORECASE | re.DOTALL)
_MAILBOX = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")  # printable ASCII without < >
_MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
_RCPT_SYNTAX = b"501 Syntax: RCPT TO: <address>"


def _smtp_parameters(text: str) -> dict[str, str] | None:
    """ESMTP parameters (``SIZE=123 BODY=8BITMIME``), names upper-cased; None if malformed."""
    parameters: dict[str, str] = {}
    for item in text.split():
        name, equals, value = item.partition("=")
        if not name.isalnum() or (equals and not value):
            return None
        parameters[name.upper()] = value.upper() if equals else ""
    return parameters


def _mail_parameters_problem(parameters: dict[str, str]) -> bytes:
    """The refusal the MAIL FROM parameters deserve; b"" when they are fine."""
    size_text = parameters.pop("SIZE", None)
    size = None if size_text is None else ascii_int_parse(size_text)
    if size_text is not None and size is None:
        return _MAIL_SYNTAX
    if size is not None and size > SMTP_DATA_SIZE_LIMIT:
        return b"552 Error: message size exceeds fixed maximum message size"
    if parameters.pop("BODY", "7BIT") not in {"7BIT", "8BITMIME"}:
        return b"501 Error: BODY can only be one of 7BIT, 8BITMIME"
    if parameters:
        return b"555 MAIL FROM parameters not recognized or not implemented"
    return b""


class _SmtpSession(asyncio.Protocol):
    """One client connection. Commands are answered as they arrive; all the
    replies to what one read brought (pipelined commands) go out in one write."""

    def __init__(self, server: _SmtpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._replies: list[bytes] = []
        self._greeted = False
        self._extended = False
        self._sender: str | None = None
        self._recipients: list[str] = []
        self._in_data = False
        self._data_fresh = False  # nothing of the message read yet: ".\r\n" ends an empty one
        self._data_scanned = 0  # bytes of the buffer already searched for the end marker
        self._data_too_large = False  # over the size limit: discarded, answered 552 at the end
        self._line_too_long = False  # a command line over the limit: dropped up to its end
        self._held = False  # the DATA reply is being delayed (reply_delay): input waits
        self._bogus = 0
        self.last_active = 0.0

    # --- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server's transport
        self._transport = transport
        self.last_active = self._server.loop.time()
        self._server.sessions.add(self)
        transport.write(f"220 {SMTP_HOSTNAME} ESMTP Cakra sink\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.sessions.discard(self)
        self._transport = None
        self._buffer.clear()

    def pause_writing(self) -> None:
        # A client that pipelines without reading its replies: stop reading until it does.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_active = self._server.loop.time()
        self._buffer += data
        if not self._held:
            self._advance()

    def close_idle(self) -> None:
        if self._transport is not None:
            self._transport.write(f"421 4.4.2 {SMTP_HOSTNAME} Error: timeout exceeded\r\n".encode())
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- input ---------------------------------------------------------------
    def _advance(self) -> None:
        """Handle every complete command or message in the buffer, then send the replies."""
        buffer = self._buffer
        while self._transport is not None and not self._held:
            if self._in_data:
                if not self._take_data():
                    break
                continue
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > SMTP_COMMAND_LINE_LIMIT:
                    self._line_too_long = True
                    buffer.clear()
                break
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if self._line_too_long or end + 1 > SMTP_COMMAND_LINE_LIMIT:
                self._line_too_long = False
                self._reply(b"500 Command line too long")
            else:
                self._command(line)
        self._flush()

    def _take_data(self) -> bool:
        """Take the message if its end marker arrived; False while waiting for more."""
        buffer = self._buffer
        if self._data_fresh:
            if len(buffer) < len(b".\r\n") and b".\r\n".startswith(buffer):
                return False
            self._data_fresh = False
            if buffer.startswith(b".\r\n"):  # an empty message
                del buffer[:3]
                self._message(b"")
                return True
        end = buffer.find(_DATA_END, self._data_scanned)
        if end < 0:
            keep = len(_DATA_END) - 1  # the end marker may straddle two reads
            if len(buffer) > SMTP_DATA_SIZE_LIMIT:
                self._data_too_large = True
                del buffer[:-keep]
            self._data_scanned = max(0, len(buffer) - keep)
            return False
        content = bytes(buffer[: end + 2])  # the last line keeps its CRLF
        del buffer[: end + len(_DATA_END)]
        self._data_scanned = 0
        self._message(content)
        return True

    def _message(self, content: bytes) -> None:
        self._in_data = False
        sender, recipients = self._sender or "", self._recipients
        self._reset()
        if self._data_too_large or len(content) > SMTP_DATA_SIZE_LIMIT:
            self._data_too_large = False
            self._reply(b"552 Error: Too much mail data")
            return
        if len(content) > SMTP_DATA_LINE_LIMIT and max(map(len, content.split(b"\n"))) > SMTP_DATA_LINE_LIMIT + 1:
            self._reply(b"500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        # Undo the client's dot-stuffing (RFC 5321 4.5.2): one leading dot per line.
        if content.startswith(b"."):
            content = content[1:]
        if b"\r\n." in content:
            content = content.replace(b"\r\n.", b"\r\n")
        sink = self._server.sink
        reply = sink.deliver(sender=sender, recipients=recipients, raw=content)
        delay = sink.reply_delay
        if delay > 0:  # a slow relay: stored, the answer still to come
            self._held = True
            self._server.loop.call_later(delay, self._release, reply)
        else:
            self._reply(reply)

    def _release(self, reply: bytes) -> None:
        self._held = False
        if self._transport is not None:
            self._reply(reply)
            self._advance()

    def _reply(self, line: bytes) -> None:
        self._replies.append(line)

    def _flush(self) -> None:
        if self._replies and self._transport is not None:
            self._replies.append(b"")
            self._transport.write(b"\r\n".join(self._replies))
        self._replies.clear()

    def _reset(self) -> None:
        self._sender = None
        self._recipients = []

    # --- commands --------------------------------------------------------------
    def _command(self, line: bytes) -> None:
        verb, _, rest = line.partition(b" ")
        try:
            command = verb.upper().decode("ascii")
            argument = rest.strip().decode("ascii")
        except UnicodeDecodeError:  # no SMTPUTF8 here, as on many relays
            self._reply(b"500 Error: strict ASCII mode")
            return
        handler = _SMTP_COMMANDS.get(command)
        if handler is not None:
            handler(self, argument)
            return
        if command in _SMTP_NOT_IMPLEMENTED:
            self._reply(f"502 5.5.1 {command} not implemented".encode())
            return
        if not command:
            self._reply(b"500 Error: bad syntax")
            return
        self._bogus += 1
        if self._bogus >= SMTP_BOGUS_LIMIT:
            self._reply(b"502 5.5.1 Too many unrecognized commands, goodbye.")
            self._quit()
            return
        self._reply(f'500 Error: command "{command[:32]}" not recognized'.encode())

    def _quit(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._buffer.clear()

    def _ehlo(self, argument: str) -> None:
        if not argument:
            self._reply(b"501 Syntax: EHLO hostname")
            return
        self._greeted = self._extended = True
        self._reset()
        self._reply(_EHLO_REPLY)

    def _helo(self, argument: str) -> None:
        if not argument:
            self._reply(b"501 Syntax: HELO hostname")
            return
        self._greeted, self._extended = True, False
        self._reset()
        self._reply(f"250 {SMTP_HOSTNAME}".encode())

    def _mail(self, argument: str) -> None:
        if not self._greeted:
            self._reply(b"503 Error: send HELO first")
            return
        if self._sender is not None:
            self._reply(b"503 Error: nested MAIL command")
            return
        match = _MAIL_FROM.fullmatch(argument)
        parameters = _smtp_parameters(match.group(2)) if match else None
        if match is None or parameters is None or (parameters and not self._extended):
            self._reply(_MAIL_SYNTAX)
            return
        address = match.group(1).strip("<>")
        if address and not _MAILBOX.fullmatch(address):  # "<>" is the null sender of bounces
            self._reply(b"553 5.1.3 Error: malformed address")
            return
        problem = _mail_parameters_problem(parameters)
        if problem:
            self._reply(problem)
            return
        self._sender = address
        self._reply(b"250 OK")

    def _rcpt(self, argument: str) -> None:
        if not self._greeted:
            self._reply(b"503 Error: send HELO first")
            return
        if self._sender is None:
            self._reply(b"503 Error: need MAIL command")
            return
        match = _RCPT_TO.fullmatch(argument)
        if match is None or match.group(2).strip():
            self._reply(_RCPT_SYNTAX if match is None else b"555 RCPT TO parameters not recognized or not implemented")
            return
        address = match.group(1).strip("<>")
        if not _MAILBOX.fullmatch(address):
            self._reply(b"553 5.1.3 Error: malformed address")
            return
        if len(self._recipients) >= SMTP_RECIPIENTS_LIMIT:
            self._reply(b"452 4.5.3 Error: too many recipients")
            return
        refusal = simulated_refusal(address)
        if refusal:
            self._reply(refusal.encode())
            return
        self._recipients.append(address)
        self._reply(b"250 OK")

    def _data(self, argument: str) -> None:
        if not self._greeted:
            self._reply(b"503 Error: send HELO first")
        elif not self._recipients:
            self._reply(b"503 Error: need RCPT command")
        elif argument:
            self._reply(b"501 Syntax: DATA")
        else:
            self._in_data = self._data_fresh = True
            self._data_scanned = 0
            self._reply(b"354 End data with <CR><LF>.<CR><LF>")

    def _rset(self, argument: str) -> None:
        if argument:
            self._reply(b"501 Syntax: RSET")
            return
        self._reset()
        self._reply(b"250 OK")

    def _noop(self, argument: str) -> None:
        self._reply(b"250 OK")

    def _vrfy(self, argument: str) -> None:
        if not argument:
            self._reply(b"501 Syntax: VRFY <address>")
            return
        self._reply(b"252 Cannot VRFY user, but will accept message and attempt delivery")

    def _goodbye(self, argument: str) -> None:
        if argument:
            self._reply(b"501 Syntax: QUIT")
            return
        self._reply(b"221 Bye")
        self._quit()


_SMTP_COMMANDS: dict[str, Callable[[_SmtpSession, str], None]] = {
    "EHLO": _SmtpSession._ehlo,  # noqa: SLF001 - the class's own dispatch table
    "HELO": _SmtpSession._helo,  # noqa: SLF001
    "MAIL": _SmtpSession._mail,  # noqa: SLF001
    "RCPT": _SmtpSession._rcpt,  # noqa: SLF001
    "DATA": _SmtpSession._data,  # noqa: SLF001
    "RSET": _SmtpSession._rset,  # noqa: SLF001
    "NOOP": _SmtpSession._noop,  # noqa: SLF001
    "VRFY": _SmtpSession._vrfy,  # noqa: SLF001
    "QUIT": _SmtpSession._goodbye,  # noqa: SLF001
}
_SMTP_NOT_IMPLEMENTED = frozenset({"EXPN", "HELP", "STARTTLS", "AUTH", "TURN", "ETRN", "BDAT"})


class _SmtpServer:
    """The listening socket and an event loop in one background thread."""

    def __init__(self, *, sink: MailSink, port: int) -> None:
        self.sink = sink
        self.sessions: set[_SmtpSession] = set()
        self.loop = asyncio.new_event_loop()
        # Bound here, in the caller's thread: a port in use fails start() at once.
        try:
            self._socket = socket.create_server((LOOPBACK, port))
        except OSError:
            self.loop.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cakra-sink-smtp", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _SmtpSession(self), sock=self._socket)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            self._failure = exc
            self._socket.close()
            self.loop.close()
            self._ready.set()
            return
        self.loop.call_later(SMTP_SWEEP_SECONDS, self._sweep)
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def _sweep(self) -> None:
        """Drop connections idle for too long (one timer for all, not one per command)."""
        cutoff = self.loop.time() - SMTP_IDLE_SECONDS
        for session in [s for s in self.sessions if s.last_active < cutoff]:
            session.close_idle()
        self.loop.call_later(SMTP_SWEEP_SECONDS, self._sweep)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # the listening socket is closed at once
        for session in list(self.sessions):
            session.abort()
        self.loop.call_soon(self.loop.stop)  # after the aborted connections' callbacks

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout=10)
        else:
            self._socket.close()
            self.loop.close()


# --- receipts -------------------------------------------------------------------
REPORT_BATCH_SECONDS = 0.2
REPORT_BATCH_SIZE = 500
# Requests in flight at once: the endpoint's web workers record one batch
# each while the next is on its way (a provider's webhook fan-out does the same).
REPORT_POSTERS = 2
REPORT_TIMEOUT_SECONDS = 10.0
REPORT_BACKOFF_MAX_SECONDS = 30.0
# An event the endpoint does not know yet is reported again this many times
# (after 1, 2, 4 … 30 s: about two minutes in all), then given up.
UNKNOWN_REFERENCE_TRIES = 8
MAX_ANSWER_BYTES = 4 * 1024 * 1024
STOP_GRACE_SECONDS = 2.0


# Where the header section may end; a longer one is searched this far only.
HEADER_SCAN_LIMIT = 64 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# The first Message-ID field (any case) with its folded continuation lines.
_MESSAGE_ID_FIELD = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def message_reference(raw: bytes) -> str:
    """The Message-ID header of ``raw`` as the sender wrote it (unfolded), or "".

    A bounded scan of the header section, not the email package's parser:
    this runs for every message the sink stores.
    """
    if raw.startswith((b"\r\n", b"\n")):  # no header section at all
        return ""
    end = _HEADER_END.search(raw, 0, HEADER_SCAN_LIMIT)
    headers = raw[: end.start() if end else HEADER_SCAN_LIMIT]
    field = _MESSAGE_ID_FIELD.search(headers)
    if field is None:
        return ""
    return b" ".join(field.group(1).split()).decode("ascii", "replace")


def simulated_refusal(address: str) -> str:
    """The reply a refusing relay gives at RCPT TO for ``address``; "" to accept it."""
    local_part = address.rpartition("@")[0].lower()
    for prefix, reply in SIMULATED_RCPT_REPLIES:
        if local_part.startswith(prefix):
            return reply
    return ""


def reports_for(recipients: list[str]) -> tuple[tuple[str, float], ...]:
    """The events the sink reports for a message to ``recipients``, with their delays."""
    for recipient in recipients:
        local_part = recipient.rpartition("@")[0].lower()
        for prefix, reports in SIMULATED_REPORTS:
            if local_part.startswith(prefix):
                return reports
    return DELIVERED_REPORT


@dataclass(slots=True)
class _PendingEvent:
    payload: dict[str, str]
    due: float  # time.monotonic() when it may be posted
    unknown_tries: int = 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A receipt endpoint that redirects is misconfigured: never follow it elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ReceiptReporter:
    """Posts the sink's events to Cakra's receipt webhook, signed, in batches.

    Events wait in memory; one thread posts them. Connection errors, 5xx and
    429 keep the batch and retry it with backoff (never dropping while the
    sink runs); other 4xx answers mean the request itself is wrong and
    retrying cannot help, so that batch is logged and dropped. ``stop()``
    gives the queue a short grace period to drain.
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        batch_seconds: float = REPORT_BATCH_SECONDS,
        batch_size: int = REPORT_BATCH_SIZE,
        posters: int = REPORT_POSTERS,
    ) -> None:
        parts = urlsplit(url)
        # The simulator talks to the local system only: a configuration
        # mistake must not post message ids to another host.
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_NAMES:
            raise ValueError("the sink reports receipts only to an http:// loopback URL")
        if not secret:
            raise ValueError("a receipt URL needs its signing secret")
        self.url = url
        self._secret = secret
        self._batch_seconds = batch_seconds
        self._batch_size = batch_size
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._condition = threading.Condition()
        self._ready: deque[_PendingEvent] = deque()
        self._delayed: list[tuple[float, int, _PendingEvent]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._failures = 0  # consecutive failed posts, shared by the posters
        self._hold_until = 0.0  # no post before this (backoff after a failure)
        self._stopping = False
        self._stop_deadline = 0.0
        self._posters = posters
        self._threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()

    # --- producer side ---------------------------------------------------------
    def report(self, *, message_id: str, event: str, event_id: str, delay: float = 0.0, detail: str = "") -> None:
        """Queue one event about ``message_id``, to be posted after ``delay`` seconds."""
        happens = datetime.now(UTC) + timedelta(seconds=delay)
        payload = {
            "event_id": event_id,
            "message_id": message_id,
            "event": event,
            "timestamp": happens.isoformat(timespec="milliseconds"),
            "detail": detail,
        }
        self._schedule(_PendingEvent(payload=payload, due=time.monotonic() + delay))

    def _schedule(self, pending: _PendingEvent) -> None:
        with self._condition:
            if pending.due <= time.monotonic():
                self._ready.append(pending)
                # A waiting poster already times the batch by its oldest event:
                # wake it only when a batch starts or fills up, not once per
                # message (each wake-up is a thread switch for nothing).
                wake = len(self._ready) == 1 or len(self._ready) >= self._batch_size
            else:
                heapq.heappush(self._delayed, (pending.due, next(self._sequence), pending))
                wake = self._delayed[0][2] is pending  # a new earliest deadline
            if wake:
                self._condition.notify()

    def pending(self) -> int:
        """Events not yet accepted by the endpoint (queued, delayed or being posted)."""
        with self._condition:
            return len(self._ready) + len(self._delayed) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued event was posted (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run, name=f"cakra-sink-receipts-{n}", daemon=True)
            for n in range(self._posters)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        with self._condition:
            self._stopping = True
            self._stop_deadline = time.monotonic() + grace
            self._condition.notify()
        for thread in self._threads:
            thread.join(timeout=grace + REPORT_TIMEOUT_SECONDS)
        self._threads = []
        left = self.pending()
        if left:
            logger.warning("sink_receipts_unsent_at_stop", events=left)

    # --- the posting thread ----------------------------------------------------------
    def _next_batch(self) -> list[_PendingEvent] | None:
        """Wait for a batch worth posting; None when it is time to stop."""
        with self._condition:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._ready.append(heapq.heappop(self._delayed)[2])
                if self._stopping and (not self._ready or now >= self._stop_deadline):
                    return None
                if now < self._hold_until and not self._stopping:
                    self._condition.wait(self._hold_until - now)
                    continue
                oldest_wait = now - self._ready[0].due if self._ready else 0.0
                if len(self._ready) >= self._batch_size or (
                    self._ready and (oldest_wait >= self._batch_seconds or self._stopping)
                ):
                    count = min(self._batch_size, len(self._ready))
                    batch = [self._ready.popleft() for _ in range(count)]
                    self._in_flight += len(batch)
                    if len(self._ready) >= self._batch_size:
                        self._condition.notify()  # another full batch: the other poster may take it
                    return batch
                timeout = 1.0
                if self._ready:
                    timeout = min(timeout, self._batch_seconds - oldest_wait)
                if self._delayed:
                    timeout = min(timeout, self._delayed[0][0] - now)
                if self._stopping:
                    timeout = min(timeout, self._stop_deadline - now)
                self._condition.wait(max(timeout, 0.001))

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                verdict, answer = self._post(batch)
            except Exception as exc:  # noqa: BLE001 - the posting thread must outlive any surprise
                logger.error("sink_receipts_post_crashed", error=type(exc).__name__)  # noqa: TRY400 - the type is enough
                verdict, answer = "retry", {}
            with self._condition:
                self._in_flight -= len(batch)
                if verdict == "retry":
                    # Back at the front, in order: nothing is dropped while running.
                    self._ready.extendleft(reversed(batch))
                    self._failures += 1
                    backoff = min(REPORT_BACKOFF_MAX_SECONDS, 0.25 * 2**self._failures)
                    self._hold_until = max(self._hold_until, time.monotonic() + backoff)
                    self.counts["retries"] += 1
                    continue
                self._failures = 0
                if verdict == "rejected":
                    self.counts["rejected"] += len(batch)
                    continue
            self._handle_answer(batch, answer)

    def _handle_answer(self, batch: list[_PendingEvent], answer: dict[str, Any]) -> None:
        results = answer.get("results")
        outcomes = {
            item.get("event_id"): item.get("outcome")
            for item in (results if isinstance(results, list) else [])
            if isinstance(item, dict)
        }
        tally: Counter[str] = Counter()
        for pending in batch:
            outcome = outcomes.get(pending.payload["event_id"], "unknown_reference")
            if outcome != "unknown_reference":
                tally[str(outcome)] += 1
                continue
            if pending.unknown_tries >= UNKNOWN_REFERENCE_TRIES:
                tally["unknown_given_up"] += 1
                logger.info("sink_receipt_given_up", event_id=pending.payload["event_id"])
                continue
            pending.unknown_tries += 1
            pending.due = time.monotonic() + min(REPORT_BACKOFF_MAX_SECONDS, 2.0 ** (pending.unknown_tries - 1))
            self._schedule(pending)
        with self._condition:
            self.counts.update(tally)

    def _post(self, batch: list[_PendingEvent]) -> tuple[str, dict[str, Any]]:
        """("ok", answer) | ("retry", {}) | ("rejected", {})."""
        body = json.dumps([pending.payload for pending in batch], separators=(",", ":")).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL was checked to be http on loopback
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: receipt_signature_header(secret=self._secret, body=body),
            },
        )
        try:
            with self._opener.open(request, timeout=REPORT_TIMEOUT_SECONDS) as response:
                answer = json.loads(response.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            if status == 404 and len(batch) == 1:  # noqa: PLR2004 - a single unknown reference
                return "ok", {"results": [{"event_id": batch[0].payload["event_id"], "outcome": "unknown_reference"}]}
            if status >= 500 or status == 429:  # noqa: PLR2004
                logger.warning("sink_receipts_post_failed", status=status, events=len(batch))
                return "retry", {}
            logger.error("sink_receipts_post_rejected", status=status, events=len(batch))  # noqa: TRY400 - no traceback wanted
            return "rejected", {}
        except (OSError, ValueError) as exc:
            # Refused, reset, timed out, or an answer that is not JSON.
            logger.warning("sink_receipts_post_failed", error=type(exc).__name__, events=len(batch))
            return "retry", {}
        with self._condition:
            self.counts["posts"] += 1
        return "ok", answer if isinstance(answer, dict) else {}


# --- pages --------------------------------------------------------------------
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


def _list_limit(query: str) -> int | None:
    """``?limit=N`` (newest N messages); None when it is not a number in range."""
    values = parse_qs(query).get("limit")
    if not values:
        return LIST_LIMIT_DEFAULT
    limit = ascii_int_parse(values[-1])
    if limit is None or not 1 <= limit <= LIST_LIMIT_MAX:
        return None
    return limit


def _index_page(sink: MailSink, *, limit: int) -> str:
    total = sink.count()
    rows = "".join(
        f"<tr><td>{escape(_local(m.received_at))}</td><td>{escape(m.sender)}</td><td>{escape(m.recipients)}</td>"
        f'<td><a href="/messages/{quote(m.id)}">{escape(m.subject) or "(no subject)"}</a></td>'
        f"<td>{_verdict_html(m.dkim)}</td></tr>"
        for m in sink.messages(limit=limit)
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
        f"<code>{escape(sink.receipts.url)}</code> (signed), except:</p><ul>{reports}</ul>"
        if sink.receipts is not None
        else '<p>Receipts: not reported (no <code>CAKRA_SINK["RECEIPT_URL"]</code>).</p>'
    )
    selector = escape(sink.dkim_selector)
    body = (
        "<h1>Cakra SMTP sink</h1>"
        f'<p class="note">DKIM is verified against a <strong>simulated DNS</strong>: the lookup of '
        f"<code>{selector}._domainkey.&lt;domain&gt;</code> is answered with the public key derived from the "
        'configured <code>CAKRA_EMAIL["DKIM_PRIVATE_KEY"]</code>, as if every sender domain published the record '
        "<code>cakra dkim dns-record</code> prints. Real receivers query real DNS.</p>"
        f"<p>Recipients that make the sink refuse, like a real relay would:</p><ul>{replies}</ul>"
        f"{receipts}"
        f"<p>Stored in <code>{escape(str(sink.maildir_path))}</code> (Maildir). "
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
