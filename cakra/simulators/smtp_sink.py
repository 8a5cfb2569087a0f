"""A local SMTP relay that keeps every message: the email channel's simulator.

``MailSink`` runs two loopback servers in background threads:

- SMTP (aiosmtpd) on 127.0.0.1, storing each accepted message byte for byte,
  as received, into a ``mailbox.Maildir`` (open it with any mail client);
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
``delivered`` and then ``opened``. Two background threads post the events in
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
import logging
import mailbox
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.policy import default as default_policy
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

import dkim
import structlog
from aiosmtpd.controller import Controller
from django.conf import settings
from django.utils import timezone

from cakra.api.receipts import SIGNATURE_HEADER, receipt_signature_header
from cakra.delivery.channels.dkim import DkimKey, dkim_key_load

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
LIST_LIMIT_DEFAULT = 200
LIST_LIMIT_MAX = 10_000
HTTP_POLL_SECONDS = 0.05  # how quickly stop() ends the HTTP thread
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
# Local part prefix -> the events reported, with their delay after storage in
# seconds. Any other accepted recipient is reported delivered at once.
SIMULATED_REPORTS: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("softbounce", (("bounced", 0.5),)),
    ("opened", (("delivered", 0.0), ("opened", 0.5))),
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


class _SinkHandler:
    """aiosmtpd handler: refuse the simulated addresses, store everything else."""

    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        local_part = address.rpartition("@")[0].lower()
        for prefix, reply in SIMULATED_RCPT_REPLIES:
            if local_part.startswith(prefix):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = bytes(envelope.original_content)
        key = self._sink.store(raw)
        self._sink.report_stored(key=key, raw=raw, recipients=list(envelope.rcpt_tos))
        if self._sink.reply_delay:  # a slow relay: stored, the answer still to come
            await asyncio.sleep(self._sink.reply_delay)
        return "250 2.0.0 OK: stored"


class _FreePortController(Controller):
    """A Controller that may listen on port 0: it learns the port the system
    chose before connecting to itself to finish start-up."""

    def _trigger_server(self) -> None:
        if self.port == 0:
            assert isinstance(self.server, asyncio.Server)  # noqa: S101 - set by _run before this hook
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


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
        if (name if port.isdigit() else host_header) not in {LOOPBACK, "localhost"}:
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
        self._maildir: mailbox.Maildir | None = None
        self._controller: _FreePortController | None = None
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
        # aiosmtpd logs every envelope address at INFO; the sink stands in for
        # a third-party relay and its log shares the developer's console.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.maildir_path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(self.maildir_path, create=True)
        self._controller = _FreePortController(
            _SinkHandler(self), hostname=LOOPBACK, port=self._requested_smtp_port, server_hostname="sink.cakra.test"
        )
        self._controller.start()
        try:
            self._http = _SinkHTTPServer(self, self._requested_http_port)
        except OSError:
            self._controller.stop()
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
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
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
        if self._controller is None:
            raise RuntimeError("the sink is not running")
        return int(self._controller.port)

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

    def store(self, raw: bytes) -> str:
        """Keep one message exactly as received; returns its id."""
        with self._lock:
            return self._box().add(raw)

    def report_stored(self, *, key: str, raw: bytes, recipients: list[str]) -> None:
        """Queue the receipts for a message just stored (nothing when reporting is off)."""
        if self.receipts is None:
            return
        reference = message_reference(raw)
        if not reference:
            logger.info("sink_receipt_skipped_no_message_id", key=key)
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


def message_reference(raw: bytes) -> str:
    """The Message-ID header of ``raw`` as the sender wrote it (unfolded), or ""."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return " ".join(str(headers.get("Message-ID", "")).split())


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
            else:
                heapq.heappush(self._delayed, (pending.due, next(self._sequence), pending))
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
        for pending in batch:
            outcome = outcomes.get(pending.payload["event_id"], "unknown_reference")
            if outcome != "unknown_reference":
                with self._condition:
                    self.counts[str(outcome)] += 1
                continue
            if pending.unknown_tries >= UNKNOWN_REFERENCE_TRIES:
                with self._condition:
                    self.counts["unknown_given_up"] += 1
                logger.info("sink_receipt_given_up", event_id=pending.payload["event_id"])
                continue
            pending.unknown_tries += 1
            pending.due = time.monotonic() + min(REPORT_BACKOFF_MAX_SECONDS, 2.0 ** (pending.unknown_tries - 1))
            self._schedule(pending)

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
    raw = values[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_LIMIT_MAX:
        return None
    return int(raw)


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
