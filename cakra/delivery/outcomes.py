"""Recording what the provider answered: attempts, statuses, the notice's progress, fallback.

:func:`deliveries_record_outcomes` writes one chunk's outcomes in one
transaction: one insert of attempts, one conditional ``UPDATE`` per
resulting status (each row's own reference or error in a ``CASE``), the
notices whose first message was accepted moved to notified (by
enforcement's service), and one audit append. Deliveries that failed for
good hand their notice to the next channel (fallback) in the same
transaction, so the failure and the next send commit together.

A retryable failure leaves the delivery ``failed_temporary`` and asks for a
retry (``RecordedOutcomes.retries``, grouped by attempt count, which sets
the backoff). The attempt count lives in the database, so a delivery whose
retries came by the sweeper or by a redelivered message still stops after
``MAX_ATTEMPTS``: on that attempt a retryable failure is recorded as
permanent, and no delivery waits silently in ``failed_temporary`` for a
retry that will never come.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from django.db import transaction
from django.db.models import Case, CharField, F, Value, When
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_events_record
from cakra.db import rows_insert, update_returning_pks
from cakra.delivery.channels.base import (
    BATCH_HALTING_ERRORS,
    DuplicateProviderError,
    SendResult,
    ThrottledProviderError,
)
from cakra.delivery.dispatch import MAX_ATTEMPTS
from cakra.delivery.fallback import delivery_fallback_advance
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.selectors import DeliveryForSend
from cakra.delivery.states import delivery_transition_many
from cakra.enforcement.services import notices_mark_notified

logger = structlog.get_logger(__name__)

_SENDING = frozenset({Delivery.Status.SENDING})
MAX_ERROR_LENGTH = 200
# Outcomes after which the provider has the message.
ACCEPTED_OUTCOMES = frozenset(
    {DeliveryAttempt.Outcome.SENT, DeliveryAttempt.Outcome.DUPLICATE, DeliveryAttempt.Outcome.RECOVERED}
)


@dataclass(frozen=True, slots=True)
class RetryGroup:
    """Deliveries of one channel to send again after one backoff: ``retries``
    tries have failed already (it sets the countdown), and the provider may
    have asked to wait ``retry_after`` seconds."""

    channel: str
    delivery_ids: list[str]
    retries: int
    retry_after: float | None = None
    detail: str = ""


def retry_after_of(result: SendResult) -> float | None:
    return result.error.retry_after if isinstance(result.error, ThrottledProviderError) else None


@dataclass(slots=True)
class RecordedOutcomes:
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: list[RetryGroup] = field(default_factory=list)
    # Delivery id -> its new status; missing when it had left "sending" meanwhile.
    statuses: dict[str, str] = field(default_factory=dict)


def _new_status(outcome: str, *, final: bool) -> str:
    if outcome in ACCEPTED_OUTCOMES:
        return Delivery.Status.SENT
    if outcome == DeliveryAttempt.Outcome.PERMANENT or final:
        return Delivery.Status.FAILED_PERMANENT
    return Delivery.Status.FAILED_TEMPORARY


@dataclass(frozen=True, slots=True)
class _Row:
    delivery: DeliveryForSend
    outcome: str
    status: str
    reference: str
    error: str
    result: SendResult


@transaction.atomic
def deliveries_record_outcomes(
    *,
    deliveries: Sequence[DeliveryForSend],
    results: dict[Any, SendResult],
    released: Sequence[DeliveryForSend] = (),
    provider: str,
) -> RecordedOutcomes:
    """Write a chunk's attempts, new statuses, notices' progress and audit
    events together; hand back the ``released`` deliveries unsent (their
    attempt not charged). A delivery that left ``sending`` meanwhile (the
    sweeper took its lease back) keeps only its attempt row."""
    now = timezone.now()
    recorded = RecordedOutcomes()
    rows = _rows(deliveries, results)
    # One statement (one JSON document on PostgreSQL).
    rows_insert(
        [
            DeliveryAttempt(
                delivery_id=row.delivery.pk,
                number=row.delivery.attempt_count,
                provider=provider,
                started_at=row.result.started_at,
                duration_ms=row.result.duration_ms,
                outcome=row.outcome,
                provider_reference=row.reference,
                error=row.error,
            )
            for row in rows
        ]
    )
    applied = _statuses_apply(rows, provider=provider, now=now)
    released_ids = _release(released, now=now)
    entries: list[AuditEntry] = []
    sent_notices: dict[Any, DeliveryForSend] = {}
    failed_for_good: list[_Row] = []
    for row in rows:
        delivery = row.delivery
        recorded.outcomes[row.outcome] += 1
        if delivery.pk not in applied:
            logger.warning("delivery.outcome_not_applied", delivery_id=delivery.reference, outcome=row.outcome)
            continue
        recorded.statuses[delivery.reference] = row.status
        entries.append(_outcome_entry(row, provider=provider))
        if row.status == Delivery.Status.SENT:
            sent_notices.setdefault(delivery.notice_id, delivery)
        elif row.status == Delivery.Status.FAILED_PERMANENT:
            failed_for_good.append(row)
    entries.extend(_notified_entries(sent_notices))
    # One audit append for every event of the chunk.
    audit_events_record(entries)
    if failed_for_good:
        _fallbacks_advance(failed_for_good)
    recorded.outcomes["released"] += len(released_ids)
    recorded.retries = _retry_groups(rows, recorded.statuses, released=[d for d in released if d.pk in released_ids])
    return recorded


def _fallbacks_advance(rows: Sequence[_Row]) -> None:
    """Hand each notice whose delivery failed for good to its next channel.

    The fallback service works on model instances (it also serves receipts
    and the sweeper): they are read here, with the notice and region it
    reads, in one query, only for the chunks that have such a failure.
    """
    loaded = Delivery.objects.select_related("notice__region").in_bulk([row.delivery.pk for row in rows])
    for row in rows:
        delivery = loaded[row.delivery.pk]
        # What this transaction has just written, whatever the read returned.
        delivery.status = Delivery.Status.FAILED_PERMANENT
        delivery_fallback_advance(delivery=delivery, reason=f"{row.outcome}: {row.error}"[:MAX_ERROR_LENGTH])


def _rows(deliveries: Sequence[DeliveryForSend], results: dict[Any, SendResult]) -> list[_Row]:
    rows: list[_Row] = []
    for delivery in deliveries:
        result = results.get(delivery.pk)
        if result is None:
            continue
        outcome = result.outcome  # the error's own outcome ("duplicate" for DuplicateProviderError)
        final = delivery.attempt_count >= MAX_ATTEMPTS
        reference = result.reference
        if isinstance(result.error, DuplicateProviderError):
            reference = result.error.provider_reference
        error = result.error.detail[:MAX_ERROR_LENGTH] if result.error is not None else ""
        rows.append(_Row(delivery, outcome, _new_status(outcome, final=final), reference, error, result))
    return rows


def _statuses_apply(rows: Sequence[_Row], *, provider: str, now: datetime) -> set[Any]:
    """One conditional UPDATE per resulting status (each row's own reference
    or error, the provider and time once); returns the deliveries changed,
    those still ``sending``."""
    applied: set[Any] = set()
    for status, group in itertools.groupby(sorted(rows, key=lambda row: row.status), key=lambda row: row.status):
        changes: dict[Any, dict[str, Any]]
        if status == Delivery.Status.SENT:
            changes = {row.delivery.pk: {"provider_reference": row.reference} for row in group}
            common = {"provider": provider, "last_error": "", "sent_at": now}
        else:
            changes = {row.delivery.pk: {"last_error": row.error} for row in group}
            common = {"provider": provider}
        applied |= delivery_transition_many(from_states=_SENDING, to=status, changes=changes, common=common)
    return applied


def _release(deliveries: Sequence[DeliveryForSend], *, now: datetime) -> set[Any]:
    """Give claimed but unattempted deliveries back: the status they had
    before the claim (a retry stays a retry), the attempt count as it was."""
    if not deliveries:
        return set()
    # Loaded after the claim: a count above one means an earlier attempt
    # failed, so the delivery was waiting for its retry.
    was_retry = [d.pk for d in deliveries if d.attempt_count > 1]
    return set(
        update_returning_pks(
            Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=Delivery.Status.SENDING),
            status=Case(
                When(pk__in=was_retry, then=Value(Delivery.Status.FAILED_TEMPORARY)),
                default=Value(Delivery.Status.PENDING),
                output_field=CharField(),
            ),
            attempt_count=F("attempt_count") - 1,
            updated_at=now,
        )
    )


def _outcome_entry(row: _Row, *, provider: str) -> AuditEntry:
    delivery = row.delivery
    sent = row.status == Delivery.Status.SENT
    data: dict[str, object] = {
        "notice": delivery.notice_reference,
        "channel": delivery.channel,
        "attempt": delivery.attempt_count,
        "provider": provider,
        "outcome": row.outcome,
        "status": row.status,
    }
    if sent:
        data["provider_reference"] = row.reference
        if row.result.template:
            data["template"] = row.result.template
    else:
        data |= {"error": row.error, "final": row.status == Delivery.Status.FAILED_PERMANENT}
    return AuditEntry(
        actor_type="system",
        action="delivery.sent" if sent else "delivery.failed",
        object_type="delivery",
        object_id=delivery.reference,
        region_code=delivery.region_code,
        data=data,
    )


def _notified_entries(sent_notices: dict[Any, DeliveryForSend]) -> list[AuditEntry]:
    """Notices moving from issued to notified on their first accepted message
    (enforcement's move), with the events naming the delivery that did it."""
    return [
        AuditEntry(
            actor_type="system",
            action="notice.notified",
            object_type="notice",
            object_id=sent_notices[notice_id].notice_reference,
            region_code=sent_notices[notice_id].region_code,
            data={"delivery": sent_notices[notice_id].reference, "channel": sent_notices[notice_id].channel},
        )
        for notice_id in notices_mark_notified(notice_ids=list(sent_notices))
    ]


def _retry_groups(
    rows: Sequence[_Row], statuses: dict[str, str], *, released: Sequence[DeliveryForSend]
) -> list[RetryGroup]:
    """Deliveries to try again, grouped by how many tries failed (their
    backoff). Released deliveries go with the failure that stopped the batch."""
    groups: dict[tuple[str, int], list[_Row]] = defaultdict(list)
    halting: _Row | None = None
    for row in rows:
        if statuses.get(row.delivery.reference) != Delivery.Status.FAILED_TEMPORARY:
            continue
        groups[(row.delivery.channel, row.delivery.attempt_count)].append(row)
        if isinstance(row.result.error, BATCH_HALTING_ERRORS):
            halting = row
    retries = []
    for (channel, attempts), members in groups.items():
        ids = [row.delivery.reference for row in members]
        retry_after = max((retry_after_of(row.result) or 0.0 for row in members), default=0.0) or None
        if halting is not None and halting in members:
            ids += [delivery.reference for delivery in released]
            released = ()
        retries.append(RetryGroup(channel, ids, retries=attempts, retry_after=retry_after, detail=members[0].error))
    if released:
        # The failure that stopped the batch was final (or not applied): the
        # released deliveries still wait for the provider's backoff.
        stopped = next((row for row in rows if isinstance(row.result.error, BATCH_HALTING_ERRORS)), None)
        retry_after = retry_after_of(stopped.result) if stopped is not None else None
        retries.append(
            RetryGroup(
                released[0].channel,
                [delivery.reference for delivery in released],
                retries=1,
                retry_after=retry_after,
                detail=stopped.error if stopped is not None else "released",
            )
        )
    return retries
