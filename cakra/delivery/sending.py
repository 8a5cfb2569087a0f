"""Sending deliveries through their channel's adapter, in batches: the worker's service.

A task carries a batch of delivery ids (ids only: the database holds the
rest). :func:`deliveries_send` sends them in chunks, and for each chunk the
order matters, each step says why:

1. **Route and take tokens.** The channel's provider now
   (:func:`cakra.delivery.routing.provider_choose`), and one token of its
   sender identity's rate limit per delivery, all in one take. If the
   tokens are too far away nothing has been claimed: the chunk and the rest
   of the batch are handed back (``SendReport.deferred``) to be published
   again after the wait, without charging an attempt.
2. **Claim** with one conditional ``UPDATE … RETURNING`` (pending or
   failed_temporary → sending, attempt count + 1). Two workers holding the
   same ids, or a batch delivered twice, cannot both send one delivery: each
   sends only the rows its own statement returned.
3. **Load and render** with no transaction open: one query for the chunk.
4. **Call the provider** with no transaction open: one adapter call for the
   chunk (:meth:`ChannelAdapter.send_many`; one SMTP session for all of it).
   Each message the provider accepts is noted on its delivery at once
   (``accepted_reference``, one small statement committed before the next
   message starts), so a worker killed mid-chunk leaves behind what the
   provider already has: the delivery's next claim records it as sent
   (outcome ``recovered``) instead of sending it again. At most the message
   in flight at the moment of the crash is in doubt. The adapter stops at
   the first throttling or unreachable answer; the messages after it are
   *released* (back to the status they had, the attempt not charged) and
   published again after the backoff.
5. **Record** every outcome of the chunk in one transaction
   (:mod:`cakra.delivery.outcomes`).

A worker killed between claim and record leaves its chunk in ``sending``:
that window is the stuck-delivery sweeper's to close (it gives the lease
back after ``SENDING_LEASE_SECONDS`` and publishes the deliveries again).

:func:`deliveries_send_and_schedule` is what the send task calls: it sends,
then publishes the retries and rate-limit deferrals with their countdowns
(:mod:`cakra.delivery.dispatch`).
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from cakra import clock
from cakra.db import update_returning_pks
from cakra.delivery.channels import Provider, adapter_for_provider
from cakra.delivery.channels.base import (
    OutboundMessage,
    ProviderError,
    RetryableProviderError,
    SendResult,
    exception_site,
)
from cakra.delivery.dispatch import (
    SendBatch,
    defer_countdown,
    deliveries_publish,
    publishing_inline,
    retry_countdown,
    send_batch_size,
)
from cakra.delivery.messages import outbound_message_build
from cakra.delivery.models import Delivery
from cakra.delivery.outcomes import RetryGroup, deliveries_record_outcomes, retry_after_of
from cakra.delivery.ratelimit import sender_batch_limit, sender_token_acquire
from cakra.delivery.routing import provider_answer_record, provider_choose
from cakra.delivery.selectors import DeliveryForSend, deliveries_get_for_send
from cakra.enforcement.models import Notice
from cakra.security.ratelimit import RateLimitedError

logger = structlog.get_logger(__name__)

SENDABLE_STATUSES = (Delivery.Status.PENDING, Delivery.Status.FAILED_TEMPORARY)


@dataclass(slots=True)
class SendReport:
    """What one call of :func:`deliveries_send` did, for the caller to act on."""

    outcomes: Counter[str] = field(default_factory=Counter)  # attempt outcomes, plus "released"
    skipped: int = 0  # not sendable (sent already, being sent, cancelled notice, unknown)
    retries: list[RetryGroup] = field(default_factory=list)
    # (channel, ids) handed back before anything was claimed (rate limit), and the wait.
    deferred: list[tuple[str, list[str]]] = field(default_factory=list)
    deferred_wait: float = 0.0


def send_time_budget() -> float:
    """Seconds a chunk may spend with its provider before the rest is handed
    back: a tenth of the sweeper's sending lease, so a slow provider never
    keeps claimed deliveries past it."""
    return float(settings.CAKRA_SWEEPER["SENDING_LEASE_SECONDS"]) / 10


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def deliveries_send_and_schedule(*, delivery_ids: Sequence[str], queue: str = "") -> SendReport:
    """Send a batch, then publish what must be sent again later: the send task's service.

    Retries and rate-limit waits become new send messages with their
    countdown (back to ``queue``, the queue the batch came from, unless
    empty), never a Celery retry: one batch holds deliveries at different
    attempts, and the count that decides the last try is each delivery's
    own, in the database. When tasks run inline (eager mode) there is no
    broker to hold a countdown, so they are sent again here at once; only a
    rate-limit wait is slept (on :mod:`cakra.clock`). Returns the report of the last send.
    """
    pending = list(delivery_ids)
    while True:
        report = deliveries_send(delivery_ids=pending)
        wait = defer_countdown(wait=report.deferred_wait) if report.deferred else 0.0
        later: list[SendBatch] = [
            (
                group.channel,
                group.delivery_ids,
                retry_countdown(retries=group.retries - 1, retry_after=group.retry_after),
            )
            for group in report.retries
        ]
        later += [(channel, ids, wait) for channel, ids in report.deferred]
        if not later:
            return report
        if not publishing_inline():
            deliveries_publish([(queue or channel, ids, countdown) for channel, ids, countdown in later])
            return report
        clock.sleep(wait)
        pending = [delivery_id for _, ids, _ in later for delivery_id in ids]


def deliveries_send(*, delivery_ids: Sequence[str]) -> SendReport:
    """Send a batch of deliveries. Idempotent: a delivery that is not pending
    or failed_temporary (already sent, being sent, planned, cancelled notice)
    is left alone.

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
        provider = provider_choose(channel, avoid=failed_on.most_common(1)[0][0] if failed_on else "")
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
        _send_chunk(provider=provider, delivery_ids=chunk, report=report)
    return report


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


def _send_chunk(*, provider: Provider, delivery_ids: list[Any], report: SendReport) -> None:
    claimed = deliveries_claim(delivery_ids=delivery_ids)
    report.skipped += len(delivery_ids) - len(claimed)
    if not claimed:
        return
    deliveries = deliveries_get_for_send(delivery_ids=claimed)
    results, released = deliveries_attempt(deliveries, provider=provider)
    for result in results.values():
        if not result.recovered:
            provider_answer_record(provider=provider, outcome=result.outcome, retry_after=retry_after_of(result))
    recorded = deliveries_record_outcomes(
        deliveries=deliveries, results=results, released=released, provider=provider.name
    )
    report.outcomes.update(recorded.outcomes)
    report.retries.extend(recorded.retries)
    logger.info(
        "delivery.batch_recorded",
        channel=deliveries[0].channel,
        provider=provider.name,
        claimed=len(claimed),
        outcomes=dict(recorded.outcomes),
        # Ids only (one line per chunk, not per message): enough to follow a
        # delivery through the logs; its audit events hold the details.
        delivery_ids=[delivery.reference for delivery in deliveries],
    )


def deliveries_attempt(
    deliveries: Sequence[DeliveryForSend], *, provider: Provider
) -> tuple[dict[Any, SendResult], list[DeliveryForSend]]:
    """Render and hand the chunk to ``provider``. Runs with no transaction open.

    Returns each attempted delivery's result, and the deliveries not
    attempted because the provider stopped the batch (throttled, unreachable).
    A delivery an interrupted attempt already got accepted is not sent again:
    its result is the noted reference, marked ``recovered``. A message that
    cannot be rendered, or a provider whose adapter cannot be built, gives a
    retryable failure of its own: a delivery never stays in ``sending``
    because of a bug or a configuration error.
    """
    results: dict[Any, SendResult] = {}
    to_send: list[DeliveryForSend] = []
    for delivery in deliveries:
        if delivery.accepted_reference:
            results[delivery.pk] = SendResult(
                started_at=timezone.now(), duration_ms=0, reference=delivery.accepted_reference, recovered=True
            )
        else:
            to_send.append(delivery)
    if not to_send:
        return results, []
    try:
        adapter = adapter_for_provider(provider.name)
    except Exception as exc:  # noqa: BLE001 - configuration failed after the claim
        for delivery in to_send:
            results[delivery.pk] = _internal_failure(exc, delivery=delivery)
        return results, []
    messages, rendered = _messages_build(to_send, results=results)
    if not messages:
        return results, []
    # No transaction is open here, on purpose: a relay may take its whole
    # timeout to answer, and a transaction held across that wait would hold
    # row locks (on SQLite, the database's single write lock) and a
    # connection from the pool for every message in flight.
    answered = adapter.send_many(
        messages, deadline=time.monotonic() + send_time_budget(), on_accepted=delivery_accepted_note
    )
    for delivery, result in zip(rendered, answered, strict=False):
        results[delivery.pk] = result
    return results, rendered[len(answered) :]


# PostgreSQL: the note is committed without waiting for its WAL flush (only
# this statement's transaction; both statements go in one round trip, which
# Django's client-side parameter binding allows). A worker killed after it
# returns cannot lose it: the server has it. Only a crash of the database
# server itself could drop the last notes, and the worst case then is the one
# without notes: a message sent twice, never one lost.
_NOTE_POSTGRESQL = "SET LOCAL synchronous_commit = off; {update}"
_NOTE = "UPDATE {table} SET {column} = %s WHERE {pk} = %s AND {column} = ''"
_NOTE_ATTEMPTS = 2


_DELIVERY = Delivery._meta  # noqa: SLF001 - Django's documented Options API


@functools.cache
def _note_sql(vendor: str) -> str:
    """The note's statement for this database vendor (built once per process:
    it runs once per accepted message)."""
    quote = connection.ops.quote_name
    update = _NOTE.format(
        table=quote(str(_DELIVERY.db_table)),
        column=quote(str(_DELIVERY.get_field("accepted_reference").column)),
        pk=quote(str(_DELIVERY.pk.column)),
    )
    return _NOTE_POSTGRESQL.format(update=update) if vendor == "postgresql" else update


def delivery_accepted_note(message: OutboundMessage, reference: str) -> None:
    """Note on the delivery, before the next message is sent, that the
    provider accepted it (see step 4 above). Outside any transaction: the
    note must be durable on its own, whatever becomes of the chunk.

    A broken connection (the database restarted, the connection was
    terminated) is replaced once; if the note still cannot be written the
    error stops the batch, and the deliveries are left to the sweeper.
    """
    pk = _DELIVERY.pk.get_db_prep_value(uuid.UUID(message.reference), connection)
    params = [reference or message.reference, pk]
    sql = _note_sql(connection.vendor)
    for attempt in range(1, _NOTE_ATTEMPTS + 1):
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
        except DatabaseError:
            if attempt == _NOTE_ATTEMPTS or connection.in_atomic_block:
                raise
            logger.warning("delivery.accepted_note_reconnect", delivery_id=message.reference)
            connection.close()
        else:
            return


def _messages_build(
    deliveries: list[DeliveryForSend], *, results: dict[Any, SendResult]
) -> tuple[list[OutboundMessage], list[DeliveryForSend]]:
    """The messages of the deliveries that could be built, and those deliveries;
    each one that could not gets its failure in ``results``."""
    messages: list[OutboundMessage] = []
    rendered: list[DeliveryForSend] = []
    for delivery in deliveries:
        try:
            messages.append(outbound_message_build(delivery=delivery))
        except ProviderError as exc:  # cannot be built, e.g. no approved template: recorded as it says
            results[delivery.pk] = SendResult(started_at=timezone.now(), duration_ms=0, error=exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a rendering bug must end as a recorded attempt
            results[delivery.pk] = _internal_failure(exc, delivery=delivery)
            continue
        rendered.append(delivery)
    return messages, rendered


def _internal_failure(exc: Exception, *, delivery: DeliveryForSend) -> SendResult:
    # Recorded like a retryable provider failure; only the type is kept (the
    # text may quote data), and not logger.exception for the same reason.
    error = f"internal {type(exc).__name__}"
    logger.error("delivery.attempt_crashed", delivery_id=delivery.reference, error=error, site=exception_site(exc))
    return SendResult(started_at=timezone.now(), duration_ms=0, error=RetryableProviderError(error))
