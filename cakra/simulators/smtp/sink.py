"""``MailSink``: the SMTP server, the store, the receipts and the pages, run together."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from django.conf import settings

from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.smtp.dns import SimulatedDkimDns, dkim_record_derive
from cakra.simulators.smtp.receipts import ReceiptReporter
from cakra.simulators.smtp.server import SmtpServer
from cakra.simulators.smtp.store import MailStore, SinkMessage
from cakra.simulators.smtp.web import WebServer

logger = structlog.get_logger(__name__)


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
        dns = SimulatedDkimDns(record=dkim_record_derive(dkim_private_key), selector=dkim_selector)
        self._store = MailStore(path=self.maildir_path, dns=dns)
        self._requested_smtp_port = smtp_port
        self._requested_http_port = http_port
        self._smtp: SmtpServer | None = None
        self._web: WebServer | None = None

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
        self._store.open()
        self._smtp = SmtpServer(deliver=self.deliver, port=self._requested_smtp_port, reply_delay=self.reply_delay)
        self._smtp.start()
        try:
            self._web = WebServer(
                store=self._store,
                port=self._requested_http_port,
                dkim_selector=self.dkim_selector,
                receipt_url=self.receipts.url if self.receipts is not None else "",
            )
        except OSError:
            self._smtp.stop()
            self._smtp = None
            raise
        self._web.start()
        if self.receipts is not None:
            self.receipts.start()
        return self

    def stop(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None
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
        if self._web is None:
            raise RuntimeError("the sink is not running")
        return self._web.port

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/"

    # --- what arrives and what was stored -----------------------------------------
    def deliver(self, *, sender: str, recipients: list[str], raw: bytes) -> bytes:
        """Store a message the SMTP server accepted and queue its receipts; the SMTP reply."""
        try:
            key = self._store.store(raw)
        except OSError as exc:  # e.g. the disk is full: a relay answers "try later"
            logger.error("sink.store_failed", error=type(exc).__name__)  # noqa: TRY400 - the type is enough
            return b"451 4.3.0 Error: message not stored, try again later"
        if self.receipts is not None:
            self.receipts.report_stored(key=key, raw=raw, recipients=recipients)
        return b"250 2.0.0 OK: stored"

    def message(self, message_id: str) -> SinkMessage | None:
        return self._store.message(message_id)

    def count(self) -> int:
        return self._store.count()

    def messages(self, *, limit: int | None = None) -> list[SinkMessage]:
        """Stored messages, newest first; only the newest ``limit`` are read."""
        return self._store.messages(limit=limit)
