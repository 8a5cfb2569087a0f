"""``SmscSimulator``: the SMPP listener, the store, the receipts and the pages, run together."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from django.conf import settings

from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.smsc.receipts import RESPONSE_TIMEOUT_SECONDS, RETRY_BASE_SECONDS, ReceiptDispatcher
from cakra.simulators.smsc.server import SmppServer, SmscBehaviour
from cakra.simulators.smsc.store import SmscStore, SmsMessage
from cakra.simulators.smsc.web import WebServer


class SmscSimulator:
    """Start with ``start()`` or ``with``; ports 0 pick free ones."""

    def __init__(
        self,
        *,
        behaviour: SmscBehaviour,
        smpp_port: int = 0,
        http_port: int | None = 0,
        receipt_retry_base: float = RETRY_BASE_SECONDS,
        receipt_response_timeout: float = RESPONSE_TIMEOUT_SECONDS,
    ) -> None:
        self.behaviour = behaviour
        self.store = SmscStore()
        self.dispatcher = ReceiptDispatcher(retry_base=receipt_retry_base, response_timeout=receipt_response_timeout)
        self._smpp_port = smpp_port
        self._http_port = http_port  # None: no pages
        self._smpp: SmppServer | None = None
        self._web: WebServer | None = None

    @classmethod
    def from_settings(cls, *, smpp_port: int | None = None, http_port: int | None = None) -> SmscSimulator:
        options: Mapping[str, Any] = settings.CAKRA_SMSC_SIM
        if not options.get("PASSWORD"):
            raise ValueError("CAKRA_SMSC_SIM['PASSWORD'] is empty (set CAKRA_SMSC_SIM_PASSWORD)")
        seed = options.get("SEED")
        behaviour = SmscBehaviour(
            system_id=str(options["SYSTEM_ID"]),
            password=str(options["PASSWORD"]),
            sender_ids=frozenset(options.get("SENDER_IDS", ())),
            latency=float(options.get("LATENCY_MS", 0)) / 1000,
            failure_rate=float(options.get("FAILURE_RATE", 0.0)),
            seed=int(seed) if seed is not None else None,
            receipt_delay=float(options.get("RECEIPT_DELAY_MS", 0)) / 1000,
            throughput_per_second=int(options.get("THROUGHPUT_PER_SECOND", 0)),
            receipt_before_response=bool(options.get("RECEIPT_BEFORE_RESPONSE", False)),
        )
        return cls(
            behaviour=behaviour,
            smpp_port=int(options["SMPP_PORT"]) if smpp_port is None else smpp_port,
            http_port=int(options["HTTP_PORT"]) if http_port is None else http_port,
        )

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        self.dispatcher.start()
        self._smpp = SmppServer(
            behaviour=self.behaviour, store=self.store, dispatcher=self.dispatcher, port=self._smpp_port
        )
        self._smpp.start()
        if self._http_port is not None:
            try:
                self._web = WebServer(store=self.store, port=self._http_port)
            except OSError:
                self.stop()
                raise
            self._web.start()
        return self

    def stop(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None
        if self._smpp is not None:
            self._smpp.stop()
            self._smpp = None
        self.dispatcher.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def server(self) -> SmppServer:
        if self._smpp is None:
            raise RuntimeError("the SMSC simulator is not running")
        return self._smpp

    @property
    def smpp_port(self) -> int:
        return self.server.port

    @property
    def http_port(self) -> int:
        if self._web is None:
            raise RuntimeError("the SMSC simulator serves no pages")
        return self._web.port

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/"

    def messages(self, *, limit: int | None = None) -> list[SmsMessage]:
        """Texts received (reassembled), newest first."""
        return self.store.messages(limit=limit)
