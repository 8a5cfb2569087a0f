"""``WhatsAppSimulator``: the Cloud API, its store, its webhooks and its pages, run together."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.whatsapp.api import Behaviour, BusinessNumber, CloudApi
from cakra.simulators.whatsapp.server import HttpServer
from cakra.simulators.whatsapp.store import MAX_MESSAGES_DEFAULT, SimulatorStore
from cakra.simulators.whatsapp.templates import Template, TemplateBook, templates_load
from cakra.simulators.whatsapp.webhooks import (
    BATCH_DELAY_SECONDS_DEFAULT,
    BATCH_SIZE_DEFAULT,
    MAX_TRIES_DEFAULT,
    RETRY_BASE_SECONDS_DEFAULT,
    WebhookReporter,
)


def business_numbers_parse(raw: Mapping[str, Any]) -> dict[str, BusinessNumber]:
    """``{phone_number_id: {"display_phone_number", "verified_name"}}`` checked; ValueError otherwise."""
    numbers = {}
    for phone_number_id, details in raw.items():
        if not (isinstance(phone_number_id, str) and phone_number_id.isascii() and phone_number_id.isdigit()):
            raise ValueError("a phone_number_id is a string of digits")
        if not isinstance(details, Mapping) or not all(
            isinstance(details.get(key), str) and details.get(key) for key in ("display_phone_number", "verified_name")
        ):
            raise ValueError(f"business number {phone_number_id}: display_phone_number and verified_name are needed")
        numbers[phone_number_id] = BusinessNumber(
            phone_number_id=phone_number_id,
            display_phone_number=str(details["display_phone_number"]),
            verified_name=str(details["verified_name"]),
        )
    if not numbers:
        raise ValueError("the simulator needs at least one business number")
    return numbers


class WhatsAppSimulator:
    """The WhatsApp Business Cloud API on 127.0.0.1. Start with ``start()`` or ``with``."""

    def __init__(
        self,
        *,
        access_token: str,
        app_secret: str,
        waba_id: str,
        business_numbers: Mapping[str, Any],
        templates: list[Template] | None = None,
        templates_file: Path | None = None,
        http_port: int = 0,
        webhook_url: str = "",
        behaviour: Behaviour | None = None,
        max_messages: int = MAX_MESSAGES_DEFAULT,
        webhook_batch_size: int = BATCH_SIZE_DEFAULT,
        webhook_batch_delay: float = BATCH_DELAY_SECONDS_DEFAULT,
        webhook_max_tries: int = MAX_TRIES_DEFAULT,
        webhook_retry_base: float = RETRY_BASE_SECONDS_DEFAULT,
    ) -> None:
        numbers = business_numbers_parse(business_numbers)
        loaded = list(templates or [])
        if templates_file is not None:
            loaded += templates_load(templates_file)
        self.store = SimulatorStore(max_messages=max_messages)
        # Webhooks are off unless a URL is given (from_settings gives CAKRA_WHATSAPP_SIM["WEBHOOK_URL"]).
        self.webhooks = (
            WebhookReporter(
                url=webhook_url,
                app_secret=app_secret,
                waba_id=waba_id,
                display_numbers={key: number.display_phone_number for key, number in numbers.items()},
                on_status=self.store.status_record,
                batch_size=webhook_batch_size,
                batch_delay=webhook_batch_delay,
                max_tries=webhook_max_tries,
                retry_base=webhook_retry_base,
            )
            if webhook_url
            else None
        )
        self.api = CloudApi(
            access_token=access_token,
            waba_id=waba_id,
            business_numbers=numbers,
            templates=TemplateBook(loaded),
            store=self.store,
            webhooks=self.webhooks,
            behaviour=behaviour or Behaviour(),
        )
        self._requested_port = http_port
        self._http: HttpServer | None = None

    @classmethod
    def from_settings(cls, *, http_port: int | None = None) -> WhatsAppSimulator:
        from django.conf import settings  # noqa: PLC0415 - the command's path only; tests build it directly

        options: Mapping[str, Any] = settings.CAKRA_WHATSAPP_SIM
        templates_file = str(options.get("TEMPLATES_FILE", ""))
        return cls(
            access_token=str(options["ACCESS_TOKEN"]),
            app_secret=str(options["APP_SECRET"]),
            waba_id=str(options["WABA_ID"]),
            business_numbers=options["BUSINESS_NUMBERS"],
            templates_file=Path(templates_file) if templates_file else None,
            http_port=int(options["HTTP_PORT"]) if http_port is None else http_port,
            webhook_url=str(options.get("WEBHOOK_URL", "")),
            behaviour=Behaviour(
                rate_per_second=float(options["RATE_PER_SECOND"]),
                pair_interval=float(options["PAIR_RATE_SECONDS"]),
                latency=float(options["LATENCY_MS"]) / 1000,
                jitter=float(options["LATENCY_JITTER_MS"]) / 1000,
                failure_rate=float(options["FAILURE_RATE"]),
                delivered_delay=float(options["DELIVERED_DELAY_MS"]) / 1000,
                read_delay=float(options["READ_DELAY_MS"]) / 1000,
                skip_delivered_rate=float(options["SKIP_DELIVERED_RATE"]),
                out_of_order_rate=float(options["OUT_OF_ORDER_RATE"]),
                seed=None if options.get("SEED") is None else int(options["SEED"]),
            ),
            max_messages=int(options["MAX_MESSAGES"]),
            webhook_batch_size=int(options["WEBHOOK_BATCH_SIZE"]),
            webhook_batch_delay=float(options["WEBHOOK_BATCH_DELAY_MS"]) / 1000,
            webhook_max_tries=int(options["WEBHOOK_MAX_TRIES"]),
            webhook_retry_base=float(options["WEBHOOK_RETRY_BASE_MS"]) / 1000,
        )

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        self._http = HttpServer(api=self.api, port=self._requested_port)
        self._http.start()
        if self.webhooks is not None:
            self.webhooks.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None
        # After the API stopped: no new statuses, and the queued ones get a short grace period.
        if self.webhooks is not None:
            self.webhooks.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def http_port(self) -> int:
        if self._http is None:
            raise RuntimeError("the WhatsApp simulator is not running")
        return self._http.port

    @property
    def base_url(self) -> str:
        """What an adapter uses as its Graph API base: ``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.http_port}"

    # --- for tests, the benchmark and the coordinator -----------------------------------------
    def received(self) -> dict[str, int]:
        """Copies accepted per ``biz_opaque_callback_data`` (Cakra's delivery id)."""
        return self.store.received()

    def messages(self, *, limit: int = 200) -> list[dict[str, Any]]:
        """The newest accepted messages, newest first (as ``/messages.json``)."""
        return self.store.messages(limit=limit)

    def inbound(
        self, *, sender: str, text: str, phone_number_id: str, name: str = "Warga", forwarded: bool = False
    ) -> str:
        """The citizen ``sender`` writes to a business number; returns the inbound wamid."""
        status, answer = self.api.inbound(
            phone_number_id=phone_number_id,
            wa_id=sender.removeprefix("+"),
            text=text,
            name=name,
            forwarded=forwarded,
        )
        if status != 200:  # noqa: PLR2004
            raise ValueError(str(answer.get("error")))
        return str(answer["id"])

    def reset(self) -> None:
        """Forget messages, windows, counters and rate limits (not the templates)."""
        self.api.reset()

    def verify_webhook(self, verify_token: str) -> bool:
        """Meta's subscription handshake against the webhook URL: True when it echoed the challenge."""
        if self.webhooks is None:
            raise RuntimeError("no webhook URL is configured")
        return self.webhooks.verify_subscription(verify_token)

    def webhook_counts(self) -> dict[str, int]:
        """Posts made, updates accepted, retries, redelivered posts and dropped updates so far."""
        return dict(self.webhooks.counts) if self.webhooks is not None else {}

    def wait_webhooks_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued webhook was accepted (or dropped); False after ``timeout``."""
        return self.webhooks.wait_idle(timeout) if self.webhooks is not None else True
