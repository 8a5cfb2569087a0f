"""Sending one delivery through its channel's adapter: the worker's service.

The order matters and each step says why:

1. **Claim** with one conditional UPDATE (pending or failed_temporary →
   sending). Two workers holding the same task, or a task delivered twice,
   cannot both send: the loser updates no row and returns quietly.
2. **Load and render** with no transaction open.
3. **Call the provider** with no transaction open.
4. **Record** the outcome in one transaction: the attempt row, the delivery's
   new status (conditional on still being ``sending``), the notice moving from
   issued to notified on its first successful delivery, and the audit events.

A retryable failure raises :class:`RetryLaterError` for the task to retry
with backoff; on the task's last try (``final_attempt``) the same failure is
recorded as permanent instead, so no delivery waits silently in
``failed_temporary`` for a retry that will never come.

A worker killed between claim and record leaves the delivery in ``sending``:
that window is the stuck-delivery sweeper's to close (it re-queues deliveries
``sending`` for too long; the Message-ID derived from the delivery id lets
receivers fold a resulting duplicate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import structlog
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_record_many
from cakra.delivery.channels import Provider, provider_adapter, provider_for_channel
from cakra.delivery.channels.base import (
    DuplicateProviderError,
    ProviderError,
    ThrottledProviderError,
    exception_site,
)
from cakra.delivery.channels.routing import delivery_route, delivery_route_outcome
from cakra.delivery.fallback import delivery_fallback_advance
from cakra.delivery.messages import outbound_message_build
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.selectors import delivery_get_for_send
from cakra.enforcement.models import Notice

logger = structlog.get_logger(__name__)

SENDABLE_STATUSES = (Delivery.Status.PENDING, Delivery.Status.FAILED_TEMPORARY)
MAX_ERROR_LENGTH = 200


class RetryLaterError(Exception):
    """The send failed for a reason that may pass; the task should retry."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Result:
    outcome: str
    provider: str
    provider_reference: str
    error: str
    started_at: datetime
    duration_ms: int
    retry_after: float | None = None


def _delivery_claim(*, delivery_id: str) -> bool:
    """Take the delivery for this worker; False when it is not ours to send.

    No audit event: the claim is a lease, and the attempt's outcome (recorded
    with its audit event) is the state change that matters. A cancelled
    notice is never sent, whatever its deliveries say.
    """
    with transaction.atomic():
        claimed = (
            Delivery.objects.filter(pk=delivery_id, status__in=SENDABLE_STATUSES)
            .exclude(notice__status=Notice.Status.CANCELLED)
            .update(status=Delivery.Status.SENDING, attempt_count=F("attempt_count") + 1, updated_at=timezone.now())
        )
    return claimed == 1


def _attempt(delivery: Delivery, *, route: Provider | None = None) -> _Result:
    """Render and hand over to the provider (``route``, by default the
    channel's first choice now). Runs with no transaction open."""
    started_at = timezone.now()
    started = time.monotonic()
    route = route or provider_for_channel(delivery.channel)
    provider = route.name

    def result(outcome: str, *, reference: str = "", error: str = "", retry_after: float | None = None) -> _Result:
        duration_ms = int((time.monotonic() - started) * 1000)
        return _Result(outcome, provider, reference, error[:MAX_ERROR_LENGTH], started_at, duration_ms, retry_after)

    try:
        adapter = provider_adapter(route.name)
        message = outbound_message_build(delivery=delivery)
        # No transaction is open here, on purpose: a relay may take its whole
        # timeout to answer, and a transaction held across that wait would
        # hold row locks (on SQLite, the database's single write lock) and a
        # connection from the pool for every message in flight.
        reference = adapter.send(message)
    except DuplicateProviderError as exc:
        return result(DeliveryAttempt.Outcome.DUPLICATE, reference=exc.provider_reference, error=exc.detail)
    except ThrottledProviderError as exc:
        return result(exc.outcome, error=exc.detail, retry_after=exc.retry_after)
    except ProviderError as exc:
        return result(exc.outcome, error=exc.detail)
    except Exception as exc:  # noqa: BLE001 - rendering or configuration failed after the claim
        # Recorded like a retryable provider failure so the delivery never
        # stays in "sending"; only the type is kept (the text may quote data).
        error = f"internal {type(exc).__name__}"
        # Not logger.exception: the message and traceback may quote personal data.
        logger.error(  # noqa: TRY400
            "delivery_attempt_crashed", delivery_id=str(delivery.id), error=error, site=exception_site(exc)
        )
        return result(DeliveryAttempt.Outcome.RETRYABLE, error=error)
    return result(DeliveryAttempt.Outcome.SENT, reference=reference)


def _new_status(outcome: str, *, final_attempt: bool) -> str:
    if outcome in {DeliveryAttempt.Outcome.SENT, DeliveryAttempt.Outcome.DUPLICATE}:
        return Delivery.Status.SENT
    if outcome == DeliveryAttempt.Outcome.PERMANENT or final_attempt:
        return Delivery.Status.FAILED_PERMANENT
    return Delivery.Status.FAILED_TEMPORARY


@transaction.atomic
def _delivery_record_outcome(*, delivery: Delivery, result: _Result, final_attempt: bool) -> str | None:
    """Write the attempt, the new status, the notice's progress and the audit
    events together. Returns the new status, or None when the delivery left
    ``sending`` meanwhile (then only the attempt is recorded)."""
    notice = delivery.notice
    now = timezone.now()
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempt_count,
        provider=result.provider,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        outcome=result.outcome,
        provider_reference=result.provider_reference,
        error=result.error,
    )
    status = _new_status(result.outcome, final_attempt=final_attempt)
    sent = status == Delivery.Status.SENT
    changes: dict[str, object] = {
        "status": status,
        "provider": result.provider,
        "last_error": "" if sent else result.error,
        "updated_at": now,
    }
    if sent:
        changes |= {"sent_at": now, "provider_reference": result.provider_reference}
    if Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(**changes) != 1:
        logger.warning("delivery_outcome_not_applied", delivery_id=str(delivery.id), outcome=result.outcome)
        return None
    data: dict[str, object] = {
        "notice": str(notice.id),
        "channel": delivery.channel,
        "attempt": delivery.attempt_count,
        "provider": result.provider,
        "outcome": result.outcome,
        "status": status,
    }
    if sent:
        data["provider_reference"] = result.provider_reference
    else:
        data |= {"error": result.error, "final": status == Delivery.Status.FAILED_PERMANENT}
    events = [
        AuditEntry(
            actor_type="system",
            action="delivery.sent" if sent else "delivery.failed",
            object_type="delivery",
            object_id=str(delivery.id),
            region_code=notice.region.code,
            data=data,
        )
    ]
    if sent and Notice.objects.filter(pk=notice.pk, status=Notice.Status.ISSUED).update(status=Notice.Status.NOTIFIED):
        events.append(
            AuditEntry(
                actor_type="system",
                action="notice.notified",
                object_type="notice",
                object_id=str(notice.id),
                region_code=notice.region.code,
                data={"delivery": str(delivery.id), "channel": delivery.channel},
            )
        )
    # One append (lock, insert, head update) for both events of this outcome.
    audit_record_many(events)
    if status == Delivery.Status.FAILED_PERMANENT:
        delivery_fallback_advance(delivery=delivery, reason=f"{result.outcome}: {result.error}"[:MAX_ERROR_LENGTH])
    return status


def delivery_send(*, delivery_id: str, final_attempt: bool = False) -> None:
    """Send one delivery. Idempotent: a delivery that is not pending or
    failed_temporary (already sent, being sent, planned, cancelled notice) is
    left alone. Raises RetryLaterError when the task should try again, and
    RateLimitedError (before claiming anything) when the sender identity's
    rate limit says to come back later.

    Must not be called inside a transaction: the provider call would run in it.
    """
    log = logger.bind(delivery_id=delivery_id)
    # The provider, and a token of its sender identity's rate limit, before
    # the claim: a delivery that must wait (RateLimitedError) stays as it is.
    route = delivery_route(delivery_id=delivery_id)
    if route is None or not _delivery_claim(delivery_id=delivery_id):
        log.info("delivery_send_skipped")
        return
    delivery = delivery_get_for_send(delivery_id=delivery_id)
    result = _attempt(delivery, route=route)
    delivery_route_outcome(provider=route, outcome=result.outcome, retry_after=result.retry_after)
    status = _delivery_record_outcome(delivery=delivery, result=result, final_attempt=final_attempt)
    log.info(
        "delivery_attempt_recorded",
        notice_id=str(delivery.notice_id),
        channel=delivery.channel,
        provider=route.name,
        attempt=delivery.attempt_count,
        outcome=result.outcome,
        status=status,
        duration_ms=result.duration_ms,
    )
    if status == Delivery.Status.FAILED_TEMPORARY:
        raise RetryLaterError(result.error, retry_after=result.retry_after)
