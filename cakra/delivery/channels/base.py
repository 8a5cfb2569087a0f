"""The one interface every provider of every channel implements.

An adapter turns an :class:`OutboundMessage` into a provider call and answers
with the provider's reference for it, or raises one of four errors; the
sending service decides what happens next by the error's type alone:

- :class:`RetryableProviderError`: try again later (network down, 4xx, timeout);
- :class:`ThrottledProviderError`: the provider asks us to slow down;
- :class:`PermanentProviderError`: this message will never go through (5xx on
  the recipient, content refused): stop, later issues fall back to the next channel;
- :class:`DuplicateProviderError`: the provider already has this message (same
  idempotency reference): treat it as sent.

:class:`UnavailableProviderError` is the retryable error that says the
provider cannot be reached at all (connection refused, timed out, session
lost), so every further message would fail the same way.

Subclasses implement only ``_send``. :meth:`ChannelAdapter.send_many` is the
one way a message leaves: it sends a batch in order (one ``_send`` per
message), maps any other exception to a retryable error, times each message,
logs ids only (never the recipient or the text), reports each accepted
message at once to the caller's ``on_accepted`` (so that a crash later in
the batch cannot make it forget what the provider already has), and **stops
at the first throttling or unavailable answer**: the provider has said that
the rest would fail too, so the messages after it are left unattempted for
the caller to hand back, instead of hammering a provider that asked us to
slow down.
Errors carry a short ``detail`` written by the adapter, never the provider's
free text (an SMTP reply often echoes the address), so it is safe to store,
log and audit.
"""

from __future__ import annotations

import abc
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import structlog
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

logger = structlog.get_logger(__name__)

MAX_DETAIL_LENGTH = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderIdentity:
    """Who the message is from: an email address and display name, a WhatsApp
    phone-number id, an SMS sender ID. Published on the portal for citizens to check."""

    address: str
    display_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateMessage:
    """A pre-approved template and its parameters: what a WhatsApp message is
    outside the customer's 24-hour window. ``parameters`` fill the body's
    ``{{1}}``, ``{{2}}``… in order; ``version`` is the registry's version the
    parameters were validated against (cakra.delivery.templates)."""

    name: str
    language: str
    parameters: tuple[str, ...] = field(repr=False)
    version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundMessage:
    """One rendered message for one recipient.

    ``recipient`` is the channel's address: an email address, or a mobile
    number in E.164 (``+62…``) for WhatsApp and SMS. ``subject`` is empty
    where the channel has none.

    ``reference`` is the delivery id: it is the idempotency key toward the
    provider, so a retry of the same delivery is recognisable as the same
    message. The recipient and the content stay out of ``repr`` so that a
    stray log line or traceback cannot leak them.
    """

    reference: str
    recipient: str = field(repr=False)
    sender: SenderIdentity
    subject: str = field(default="", repr=False)
    text: str = field(repr=False)
    html: str = field(default="", repr=False)
    # WhatsApp: the approved template sent; ``text`` is then what it renders
    # to, the words the citizen sees, for the timeline and the simulator's
    # check. None for a free-form message (an answer inside the customer's
    # window) and for every other channel.
    template: TemplateMessage | None = None


class ProviderError(Exception):
    """Base of the taxonomy. ``outcome`` matches ``DeliveryAttempt.Outcome``."""

    outcome: ClassVar[str] = "retryable"

    def __init__(self, detail: str) -> None:
        self.detail = detail[:MAX_DETAIL_LENGTH]
        super().__init__(self.detail)


class RetryableProviderError(ProviderError):
    outcome = "retryable"


class UnavailableProviderError(RetryableProviderError):
    """The provider cannot be reached (refused, timed out, disconnected): a
    retryable failure that would repeat for every further message now."""


class ThrottledProviderError(ProviderError):
    outcome = "throttled"

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    outcome = "permanent"


class DuplicateProviderError(ProviderError):
    outcome = "duplicate"

    def __init__(self, detail: str, *, provider_reference: str = "") -> None:
        super().__init__(detail)
        self.provider_reference = provider_reference


# Answers after which a batch stops: the provider has said the rest would fail too.
BATCH_HALTING_ERRORS = (ThrottledProviderError, UnavailableProviderError)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one message of a batch: the provider's reference, or the error."""

    started_at: datetime
    duration_ms: int
    reference: str = ""
    error: ProviderError | None = None
    # Not sent now: an interrupted earlier attempt was accepted with ``reference``.
    recovered: bool = False
    # The template sent ("cakra_notice id v1"), for the timeline: which
    # approved text the citizen saw. Empty for a message without one.
    template: str = ""

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return self.error.outcome
        return "recovered" if self.recovered else "sent"


def exception_site(exc: BaseException) -> str:
    """Where an exception was raised (file, line, function of the innermost
    frame): enough to find a bug, and unlike the message or a traceback with
    values, free of the data being processed."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f"{frame.filename.rpartition('/')[2]}:{frame.lineno} in {frame.name}"


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class ChannelAdapter(abc.ABC):
    """Base class of every provider adapter.

    ``options`` is the ``OPTIONS`` dictionary of one ``CAKRA_PROVIDERS`` entry
    (see :mod:`cakra.delivery.channels.registry`); ``name`` is that entry's
    name, the provider name recorded on deliveries and attempts (defaults to
    the class's ``provider``, its kind: "smtp", "whatsapp-cloud", …).

    Each adapter declares the options it needs (``required_options``) and
    checks their values in :meth:`check_options`; the start-up system check
    and the constructor both call it, so a broken configuration is reported
    before the first message rather than on it.
    """

    channel: ClassVar[str]
    provider: ClassVar[str]
    required_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, options: Mapping[str, Any], name: str = "") -> None:
        problems = self.check_options(options)
        if problems:
            raise ImproperlyConfigured(f"provider {name or self.provider!r}: {'; '.join(problems)}")
        self.options = options
        self.name = name or self.provider

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """What is wrong with ``options`` for this adapter (empty when nothing).

        Messages name the option, never its value (it may be a secret).
        Subclasses extend this with checks of their own values.
        """
        return [f"OPTIONS[{key!r}] is required" for key in cls.required_options if key not in options]

    def close(self) -> None:  # noqa: B027 - optional hook: most adapters hold nothing open
        """Release what the adapter keeps open between sends (connections)."""

    def send_many(
        self,
        messages: Sequence[OutboundMessage],
        *,
        deadline: float | None = None,
        on_accepted: Callable[[OutboundMessage, str], None] | None = None,
    ) -> list[SendResult]:
        """Send a batch, in order; one result per message attempted.

        Stops after a throttling or unavailable answer (``BATCH_HALTING_ERRORS``),
        and before starting a message once ``deadline`` (``time.monotonic()``)
        has passed, so the list may be shorter than ``messages``: the messages
        after it were not attempted, and the caller hands them back unsent
        (a provider answering each message just within its timeout must not
        keep a batch in ``sending`` past the sweeper's lease). Adapters
        that keep a session (SMTP) carry the whole batch over it.

        ``on_accepted(message, reference)`` runs after each accepted message,
        before the next one is started: the caller's durable note that the
        provider has it. If it raises, the batch stops and the exception
        propagates (what was accepted before is in the caller's notes; the
        rest was not attempted). One log line for the batch (counts and
        time), plus one per failed message, with ids only.
        """
        results: list[SendResult] = []
        batch_started = time.monotonic()
        for message in messages:
            if deadline is not None and results and time.monotonic() > deadline:
                break
            started_at, started = timezone.now(), time.monotonic()
            error: ProviderError | None = None
            reference = ""
            try:
                reference = self._send(message)
            except ProviderError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - any adapter failure must end as a recorded attempt
                error = RetryableProviderError(f"unexpected {type(exc).__name__}")
                # Not logger.exception: the message and traceback may quote the recipient.
                logger.error(  # noqa: TRY400
                    "provider.send_crashed",
                    delivery_id=message.reference,
                    channel=self.channel,
                    provider=self.name,
                    error=error.detail,
                    site=exception_site(exc),
                )
            template = message.template
            result = SendResult(
                started_at=started_at,
                duration_ms=_elapsed_ms(started),
                reference=reference,
                error=error,
                template="" if template is None else f"{template.name} {template.language} v{template.version}",
            )
            results.append(result)
            if error is None and on_accepted is not None:
                try:
                    on_accepted(message, reference)
                except Exception:
                    self._batch_log(messages, results, batch_started)
                    raise
                continue
            if error is not None:
                logger.warning(
                    "provider.send_failed",
                    delivery_id=message.reference,
                    channel=self.channel,
                    provider=self.name,
                    outcome=error.outcome,
                    error=error.detail,
                    duration_ms=result.duration_ms,
                )
                if isinstance(error, BATCH_HALTING_ERRORS):
                    break
        self._batch_log(messages, results, batch_started)
        return results

    def _batch_log(self, messages: Sequence[OutboundMessage], results: list[SendResult], batch_started: float) -> None:
        outcomes = Counter(result.outcome for result in results)
        logger.info(
            "provider.send_batch",
            channel=self.channel,
            provider=self.name,
            messages=len(messages),
            attempted=len(results),
            outcomes=dict(outcomes),
            duration_ms=_elapsed_ms(batch_started),
        )

    @abc.abstractmethod
    def _send(self, message: OutboundMessage) -> str:
        """Hand the message to the provider; return its reference or raise a ProviderError."""
