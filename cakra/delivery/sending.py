"""Sending deliveries through their channel's adapter, in batches: the worker's service.

A task carries a batch of delivery ids (ids only: the database holds the
rest). :func:`deliveries_send` sends them in chunks, and for each chunk the
order matters, each step says why:

1. **Route and take tokens.** The channel's provider now, and one token of
   its sender identity's rate limit per delivery, all in one take. If the
   tokens are too far away nothing has been claimed: the chunk and the rest
   of the batch are handed back (``SendReport.deferred``) for the task to
   publish again after the wait, without charging an attempt.
2. **Claim** with one conditional ``UPDATE … RETURNING`` (pending or
   failed_temporary → sending, attempt count + 1). Two workers holding the
   same ids, or a batch delivered twice, cannot both send one delivery: each
   sends only the rows its own statement returned.
3. **Load and render** with no transaction open: one query for the chunk.
4. **Call the provider** with no transaction open: one adapter call for the
   chunk (:meth:`ChannelAdapter.send_many`; one SMTP session for all of it).
   The adapter stops at the first throttling or unreachable answer; the
   messages after it are *released* (back to the status they had, the
   attempt not charged) and published again after the backoff.
5. **Record** every outcome of the chunk in one transaction: one insert of
   attempts, one conditional ``UPDATE`` per resulting status (each row's
   own reference or error in a ``CASE``), the notices moving from issued to
   notified on their first successful delivery, and one audit append.
   Deliveries that failed for good hand their notice to the next channel
   (fallback) in the same transaction.

A retryable failure leaves the delivery ``failed_temporary`` and asks for a
retry (``SendReport.retries``, grouped by attempt count, which sets the
backoff); the task publishes them. The attempt count lives in the database,
so a delivery whose retries came by the sweeper or by a redelivered message
still stops after ``MAX_ATTEMPTS``: on that attempt a retryable failure is
recorded as permanent, and no delivery waits silently in
``failed_temporary`` for a retry that will never come.

A worker killed between claim and record leaves its chunk in ``sending``:
that window is the stuck-delivery sweeper's to close (it re-queues
deliveries ``sending`` for too long; the Message-ID derived from the
delivery id lets receivers fold a resulting duplicate).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Case, CharField, Exists, F, OuterRef, Value, When
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_record_many
from cakra.db import rows_insert, update_returning_pks
from cakra.delivery.channels import Provider, provider_adapter
from cakra.delivery.channels.base import (
    BATCH_HALTING_ERRORS,
    DuplicateProviderError,
    OutboundMessage,
    RetryableProviderError,
    SendResult,
    ThrottledProviderError,
    exception_site,
)
from cakra.delivery.channels.routing import deliveries_route, delivery_route_outcome
from cakra.delivery.fallback import delivery_fallback_advance
from cakra.delivery.messages import outbound_message_build
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.ratelimit import RateLimitedError, sender_batch_limit, sender_token_acquire
from cakra.delivery.selectors import DeliveryForSend, deliveries_get_for_send
from cakra.delivery.states import delivery_transition_many
from cakra.enforcement.models import Notice

logger = structlog.get_logger(__name__)

SENDABLE_STATUSES = (Delivery.Status.PENDING, Delivery.Status.FAILED_TEMPORARY)
_SENDING = frozenset({Delivery.Status.SENDING})
MAX_ERROR_LENGTH = 200
# Attempts per delivery: the first and eight retries.
MAX_ATTEMPTS = 9
# Deliveries per chunk when settings do not say (CAKRA_SEND_BATCH): enough to
# spread a commit, an audit append and a session over many messages, few
# enough that a chunk is sent in well under a second.
DEFAULT_SEND_BATCH = 100


class RetryLaterError(Exception):
    """The send failed for a reason that may pass; it should be tried again."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


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


@dataclass(slots=True)
class SendReport:
    """What one call of :func:`deliveries_send` did, for the task to act on."""

    outcomes: Counter[str] = field(default_factory=Counter)  # attempt outcomes, plus "released"
    skipped: int = 0  # not sendable (sent already, being sent, cancelled notice, unknown)
    retries: list[RetryGroup] = field(default_factory=list)
    # (channel, ids) handed back before anything was claimed (rate limit), and the wait.
    deferred: list[tuple[str, list[str]]] = field(default_factory=list)
    deferred_wait: float = 0.0


def send_batch_size() -> int:
    return max(1, int(getattr(settings, "CAKRA_SEND_BATCH", DEFAULT_SEND_BATCH)))


def send_time_budget() -> float:
    """Seconds a chunk may spend with its provider before the rest is handed
    back: a tenth of the sweeper's sending lease, so a slow provider never
    keeps claimed deliveries past it."""
    return float(settings.CAKRA_SWEEPER["SENDING_LEASE_SECONDS"]) / 10


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def deliveries_send(*, delivery_ids: Sequence[str], final_attempt: bool = False) -> SendReport:
    """Send a batch of deliveries. Idempotent: a delivery that is not pending
    or failed_temporary (already sent, being sent, planned, cancelled notice)
    is left alone. ``final_attempt`` records any failure as permanent.

    Must not be called inside a transaction: the provider calls would run in it.
    """
    report = SendReport()
    rows = list(
        Delivery.objects.filter(pk__in=list(delivery_ids), status__in=SENDABLE_STATUSES).values_list(
            "id", "channel", "status", "provider"
        )
    )
    report.skipped = len(set(delivery_ids)) - len(rows)
    # In the order given: the producer's order (oldest notices first) is the sending order.
    order = {str(pk): index for index, pk in enumerate(delivery_ids)}
    rows.sort(key=lambda row: order.get(str(row[0]), 0))
    by_channel: dict[str, list[tuple[Any, str, str]]] = defaultdict(list)
    for delivery_id, channel, status, last_provider in rows:
        by_channel[channel].append((delivery_id, status, last_provider))
    work: list[tuple[Provider, list[Any]]] = []
    for channel, members in by_channel.items():
        # Retries failed on one provider together: another one, when there is
        # a healthy one, gets them.
        failed_on = Counter(p for _, status, p in members if status == Delivery.Status.FAILED_TEMPORARY and p)
        provider = deliveries_route(channel=channel, failed_on=failed_on.most_common(1)[0][0] if failed_on else "")
        size = send_batch_size()
        if provider.name:  # a real provider: no more than one take of its rate limit
            size = min(size, sender_batch_limit(provider))
        work.extend((provider, chunk) for chunk in _chunks([pk for pk, _, _ in members], size))
    for position, (provider, chunk) in enumerate(work):
        if provider.name:
            try:
                sender_token_acquire(provider, count=len(chunk))
            except RateLimitedError as exc:
                for later_provider, rest in work[position:]:
                    if report.deferred and report.deferred[-1][0] == later_provider.channel:
                        report.deferred[-1][1].extend(str(pk) for pk in rest)
                    else:
                        report.deferred.append((later_provider.channel, [str(pk) for pk in rest]))
                report.deferred_wait = exc.wait
                break
        _send_chunk(provider=provider, delivery_ids=chunk, final_attempt=final_attempt, report=report)
    return report


def delivery_send(*, delivery_id: str, final_attempt: bool = False) -> None:
    """Send one delivery (a batch of one). Raises RetryLaterError when it
    should be tried again, and RateLimitedError (before claiming anything)
    when its sender identity's rate limit says to come back later."""
    report = deliveries_send(delivery_ids=[delivery_id], final_attempt=final_attempt)
    if report.deferred:
        raise RateLimitedError(identity="", wait=report.deferred_wait)
    if report.retries:
        group = report.retries[0]
        raise RetryLaterError(group.detail, retry_after=group.retry_after)


def deliveries_claim(*, delivery_ids: Sequence[Any]) -> list[Any]:
    """Take the deliveries for this worker; returns those it won, in the
    given order. A cancelled notice is never sent, whatever its deliveries say.

    No audit event: the claim is a lease, and the attempt's outcome (recorded
    with its audit event) is the state change that matters.
    """
    # One statement, so atomic on its own: no transaction around it. The
    # status condition must be on the row being updated, not in a subquery:
    # a join through the notice (``exclude(notice__status=…)``) makes Django
    # write ``WHERE id IN (SELECT … WHERE status IN …)``, and on PostgreSQL a
    # second claim blocked on the first one's row locks then rechecks only
    # ``id IN (…)``, still true, and wins the same rows again. The notice is
    # checked with NOT EXISTS instead (an anti-join on its primary key).
    cancelled = Notice.objects.filter(pk=OuterRef("notice_id"), status=Notice.Status.CANCELLED)
    won = set(
        update_returning_pks(
            Delivery.objects.filter(~Exists(cancelled), pk__in=list(delivery_ids), status__in=SENDABLE_STATUSES),
            status=Delivery.Status.SENDING,
            attempt_count=F("attempt_count") + 1,
            updated_at=timezone.now(),
        )
    )
    return [pk for pk in delivery_ids if pk in won]


def _send_chunk(*, provider: Provider, delivery_ids: list[Any], final_attempt: bool, report: SendReport) -> None:
    claimed = deliveries_claim(delivery_ids=delivery_ids)
    report.skipped += len(delivery_ids) - len(claimed)
    if not claimed:
        return
    deliveries = deliveries_get_for_send(delivery_ids=claimed)
    results, released = deliveries_attempt(deliveries, provider=provider)
    for result in results.values():
        delivery_route_outcome(provider=provider, outcome=result.outcome, retry_after=_retry_after(result))
    recorded = deliveries_record_outcomes(
        deliveries=deliveries, results=results, released=released, provider=provider.name, final_attempt=final_attempt
    )
    report.outcomes.update(recorded.outcomes)
    report.retries.extend(recorded.retries)
    logger.info(
        "delivery_batch_recorded",
        channel=deliveries[0].channel,
        provider=provider.name,
        claimed=len(claimed),
        outcomes=dict(recorded.outcomes),
        # Ids only (one line per chunk, not per message): enough to follow a
        # delivery through the logs; its audit events hold the details.
        delivery_ids=[delivery.reference for delivery in deliveries],
    )


def _retry_after(result: SendResult) -> float | None:
    return result.error.retry_after if isinstance(result.error, ThrottledProviderError) else None


def deliveries_attempt(
    deliveries: Sequence[DeliveryForSend], *, provider: Provider
) -> tuple[dict[Any, SendResult], list[DeliveryForSend]]:
    """Render and hand the chunk to ``provider``. Runs with no transaction open.

    Returns each attempted delivery's result, and the deliveries not
    attempted because the provider stopped the batch (throttled, unreachable).
    A message that cannot be rendered, or a provider whose adapter cannot be
    built, gives a retryable failure of its own: a delivery never stays in
    ``sending`` because of a bug or a configuration error.
    """
    results: dict[Any, SendResult] = {}
    try:
        adapter = provider_adapter(provider.name)
    except Exception as exc:  # noqa: BLE001 - configuration failed after the claim
        for delivery in deliveries:
            results[delivery.pk] = _internal_failure(exc, delivery=delivery)
        return results, []
    messages: list[OutboundMessage] = []
    rendered: list[DeliveryForSend] = []
    for delivery in deliveries:
        try:
            messages.append(outbound_message_build(delivery=delivery))
        except Exception as exc:  # noqa: BLE001 - a rendering bug must end as a recorded attempt
            results[delivery.pk] = _internal_failure(exc, delivery=delivery)
            continue
        rendered.append(delivery)
    if not messages:
        return results, []
    # No transaction is open here, on purpose: a relay may take its whole
    # timeout to answer, and a transaction held across that wait would hold
    # row locks (on SQLite, the database's single write lock) and a
    # connection from the pool for every message in flight.
    answered = adapter.send_many(messages, deadline=time.monotonic() + send_time_budget())
    for delivery, result in zip(rendered, answered, strict=False):
        results[delivery.pk] = result
    return results, rendered[len(answered) :]


def _internal_failure(exc: Exception, *, delivery: DeliveryForSend) -> SendResult:
    # Recorded like a retryable provider failure; only the type is kept (the
    # text may quote data), and not logger.exception for the same reason.
    error = f"internal {type(exc).__name__}"
    logger.error("delivery_attempt_crashed", delivery_id=delivery.reference, error=error, site=exception_site(exc))
    return SendResult(started_at=timezone.now(), duration_ms=0, error=RetryableProviderError(error))


@dataclass(slots=True)
class RecordedOutcomes:
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: list[RetryGroup] = field(default_factory=list)
    # Delivery id -> its new status; missing when it had left "sending" meanwhile.
    statuses: dict[str, str] = field(default_factory=dict)


def _new_status(outcome: str, *, final: bool) -> str:
    if outcome in {DeliveryAttempt.Outcome.SENT, DeliveryAttempt.Outcome.DUPLICATE}:
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
    final_attempt: bool = False,
) -> RecordedOutcomes:
    """Write a chunk's attempts, new statuses, notices' progress and audit
    events together; hand back the ``released`` deliveries unsent (their
    attempt not charged). A delivery that left ``sending`` meanwhile (the
    sweeper took its lease back) keeps only its attempt row."""
    now = timezone.now()
    recorded = RecordedOutcomes()
    rows = _rows(deliveries, results, final_attempt=final_attempt)
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
            logger.warning("delivery_outcome_not_applied", delivery_id=delivery.reference, outcome=row.outcome)
            continue
        recorded.statuses[delivery.reference] = row.status
        entries.append(_outcome_entry(row, provider=provider))
        if row.status == Delivery.Status.SENT:
            sent_notices.setdefault(delivery.notice_id, delivery)
        elif row.status == Delivery.Status.FAILED_PERMANENT:
            failed_for_good.append(row)
    entries.extend(_notified_entries(sent_notices))
    # One audit append for every event of the chunk.
    audit_record_many(entries)
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


def _rows(deliveries: Sequence[DeliveryForSend], results: dict[Any, SendResult], *, final_attempt: bool) -> list[_Row]:
    rows: list[_Row] = []
    for delivery in deliveries:
        result = results.get(delivery.pk)
        if result is None:
            continue
        outcome = result.outcome  # the error's own outcome ("duplicate" for DuplicateProviderError)
        final = final_attempt or delivery.attempt_count >= MAX_ATTEMPTS
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
    """Notices moving from issued to notified on their first accepted message."""
    if not sent_notices:
        return []
    moved = update_returning_pks(
        Notice.objects.filter(pk__in=list(sent_notices), status=Notice.Status.ISSUED), status=Notice.Status.NOTIFIED
    )
    entries = []
    for notice_id in moved:
        delivery = sent_notices[notice_id]
        entries.append(
            AuditEntry(
                actor_type="system",
                action="notice.notified",
                object_type="notice",
                object_id=delivery.notice_reference,
                region_code=delivery.region_code,
                data={"delivery": delivery.reference, "channel": delivery.channel},
            )
        )
    return entries


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
        retry_after = max((_retry_after(row.result) or 0.0 for row in members), default=0.0) or None
        if halting is not None and halting in members:
            ids += [delivery.reference for delivery in released]
            released = ()
        retries.append(RetryGroup(channel, ids, retries=attempts, retry_after=retry_after, detail=members[0].error))
    if released:
        # The failure that stopped the batch was final (or not applied): the
        # released deliveries still wait for the provider's backoff.
        stopped = next((row for row in rows if isinstance(row.result.error, BATCH_HALTING_ERRORS)), None)
        retry_after = _retry_after(stopped.result) if stopped is not None else None
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
