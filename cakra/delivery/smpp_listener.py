"""``cakra smpp-receipts``: a bound session per SMPP provider that only takes receipts.

An SMSC sends ``deliver_sm`` down any session of the account bound as
receiver or transceiver. While workers send, their own sessions take the
receipts; when none is bound (a quiet night, workers scaled to zero) the
receipts would wait at the SMSC until it gives up. This listener keeps one
``bind_transceiver`` per configured SMPP provider (the adapter's own session
class), records what arrives in batches through
:func:`cakra.delivery.smpp_receipts.deliver_sm_answer`, answers each, checks
the link with ``enquire_link`` when idle, and binds again with backoff when
the session drops.

A module of its own (not the command, not the adapter): it joins the
adapter's session to the receipt recording, and ``channels`` must not
import back from here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog
from django.db import connections
from django.utils.module_loading import import_string

from cakra.delivery.channels.base import UnavailableProviderError
from cakra.delivery.channels.registry import providers_configured
from cakra.delivery.channels.smpp import TRANSCEIVER, SessionLostError, SmppSession, SmppSettings, SmppSmsAdapter
from cakra.delivery.smpp_receipts import deliver_sm_answer

logger = structlog.get_logger(__name__)

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
BATCH_MAX = 500  # deliver_sm recorded in one batch at most


def smpp_providers() -> dict[str, Mapping[str, Any]]:
    """Name -> OPTIONS of every configured provider whose backend is the SMPP adapter."""
    found: dict[str, Mapping[str, Any]] = {}
    for provider in providers_configured().values():
        backend = import_string(provider.backend)
        if isinstance(backend, type) and issubclass(backend, SmppSmsAdapter):
            found[provider.name] = provider.options
    return found


class ReceiptListener:
    """One provider's listening session, in a thread, until :meth:`stop`."""

    def __init__(
        self, *, provider: str, options: Mapping[str, Any], backoff_first: float = BACKOFF_FIRST_SECONDS
    ) -> None:
        problems = SmppSmsAdapter.check_options(options)
        if problems:
            raise ValueError(f"provider {provider!r}: {'; '.join(problems)}")
        self.provider = provider
        # Always a transceiver, whatever the workers bind as: this session is the one that takes receipts.
        self.settings = dataclasses.replace(SmppSettings.from_options(options), bind=TRANSCEIVER)
        self._backoff_first = backoff_first
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.bound = threading.Event()
        self.binds = 0

    def _record(self, pdus: Any) -> list[int]:
        return deliver_sm_answer(provider=self.provider, pdus=pdus)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"cakra-smpp-receipts-{self.provider}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout + 5)
            self._thread = None

    def run(self) -> None:
        try:
            self._run()
        finally:
            # Receipts were recorded from this thread: its database connections end with it.
            connections.close_all()

    def _run(self) -> None:
        backoff = self._backoff_first
        while not self._stopping.is_set():
            session = SmppSession(self.settings, on_deliver_sm=self._record)
            try:
                session.open()
            except UnavailableProviderError as exc:
                logger.warning("smpp.listener_bind_failed", provider=self.provider, error=exc.detail, retry_in=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            backoff = self._backoff_first
            self.binds += 1
            self.bound.set()
            logger.info("smpp.listener_bound", provider=self.provider)
            try:
                self._listen(session)
            except SessionLostError:
                logger.warning("smpp.listener_session_lost", provider=self.provider)
            finally:
                self.bound.clear()
                if self._stopping.is_set():
                    session.close()
                else:
                    session.drop()

    def _listen(self, session: SmppSession) -> None:
        """Take and answer receipts until stopped; enquire_link after an idle spell."""
        idle_limit = self.settings.enquire_link_seconds
        while not self._stopping.is_set():
            if session.wait_readable(min(idle_limit, 0.5)):
                session.pending_read(limit=BATCH_MAX)
                session.receipts_answer()
            elif time.monotonic() - session.last_used >= idle_limit:
                session.link_check()
                session.receipts_answer()
