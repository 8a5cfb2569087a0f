"""In-memory providers for unit tests, as Django has its locmem mail backend.

A locmem adapter keeps every accepted message in :data:`outbox` (in this
process) instead of calling a provider, so a test can run the real sending
path (claim, render, send, record, fallback) without a simulator. Answers
other than "accepted" are configuration, per recipient::

    "OPTIONS": {"ANSWERS": {"bounce@example.co.id": "permanent", "slow@example.co.id": "throttled"}}

with one of ``permanent``, ``retryable``, ``unavailable``, ``throttled`` or
``duplicate``, each raising the matching error of the taxonomy
(:mod:`.base`). End-to-end tests and the benchmark use the simulators
instead (:mod:`cakra.simulators`), which speak the real wire protocols.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from cakra.delivery.channels.base import (
    ChannelAdapter,
    DuplicateProviderError,
    OutboundMessage,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.phone import mobile_e164

# Every message a locmem adapter accepted in this process, in order: (provider name, message).
outbox: list[tuple[str, OutboundMessage]] = []
_lock = threading.Lock()

THROTTLE_RETRY_AFTER_SECONDS = 30.0
_ANSWERS: dict[str, type[ProviderError]] = {
    "permanent": PermanentProviderError,
    "retryable": RetryableProviderError,
    "unavailable": UnavailableProviderError,
    "throttled": ThrottledProviderError,
    "duplicate": DuplicateProviderError,
}


def outbox_clear() -> None:
    with _lock:
        outbox.clear()


class LocmemAdapter(ChannelAdapter):
    """Accepts into :data:`outbox`; the reference is ``locmem-<delivery id>``."""

    channel: ClassVar[str]
    provider: ClassVar[str]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = super().check_options(options)
        answers = options.get("ANSWERS", {})
        if not isinstance(answers, Mapping):
            return [*problems, "OPTIONS['ANSWERS'] must map recipients to answers"]
        known = ", ".join(sorted(_ANSWERS))
        problems += [
            f"OPTIONS['ANSWERS'] has an answer that is not one of {known}"
            for answer in answers.values()
            if answer not in _ANSWERS
        ][:1]
        return problems

    def _send(self, message: OutboundMessage) -> str:
        answer = self.options.get("ANSWERS", {}).get(message.recipient)
        reference = f"locmem-{message.reference}"
        if answer == "throttled":
            raise ThrottledProviderError("locmem: throttled", retry_after=THROTTLE_RETRY_AFTER_SECONDS)
        if answer == "duplicate":
            raise DuplicateProviderError("locmem: already accepted", provider_reference=reference)
        if answer is not None:
            raise _ANSWERS[answer](f"locmem: {answer}")
        with _lock:
            outbox.append((self.name, message))
        return reference


class LocmemEmailAdapter(LocmemAdapter):
    channel = "email"
    provider = "locmem-email"


class LocmemWhatsAppAdapter(LocmemAdapter):
    """WhatsApp in memory: the recipient is still checked as a mobile number,
    as the Cloud API adapter does before any request."""

    channel = "whatsapp"
    provider = "locmem-whatsapp"

    def _send(self, message: OutboundMessage) -> str:
        mobile_e164(message.recipient)
        return super()._send(message)


class LocmemSmsAdapter(LocmemAdapter):
    channel = "sms"
    provider = "locmem-sms"

    def _send(self, message: OutboundMessage) -> str:
        mobile_e164(message.recipient)
        return super()._send(message)
