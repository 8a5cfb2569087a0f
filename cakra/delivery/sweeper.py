"""The sweeper: the database is the truth, a queue message only a trigger.

Two scheduled services (Celery beat runs them through ``cakra.delivery.tasks``;
their triggers are published through :mod:`cakra.delivery.dispatch`):

:func:`delivery.sweep_stuck` finds deliveries whose trigger was lost and sends
the trigger again:

- ``pending`` untouched for longer than the pending lease: the message that
  should have sent it never arrived (broker restart, a crash between commit
  and publish, a message dropped by the embedded filesystem broker when its
  worker was killed);
- ``sending`` for longer than the send lease: the worker died between its
  claim and recording the outcome. The lease is given back with one
  conditional UPDATE (sending → failed_temporary, ``last_error="lease
  expired"``, audit event ``delivery.lease_expired``) and the delivery is
  sent again. The lease must stay far above the longest provider call (the
  SMTP timeout is seconds): a worker that is slow but alive would otherwise
  send the same message twice (its late outcome is then only kept as an
  attempt, the delivery having left ``sending``);
- ``failed_temporary`` untouched for longer than the longest retry countdown
  plus a margin: the task's retry message was lost.

Re-enqueueing touches ``updated_at``, so the next sweep leaves the row alone
for another lease; a second message for a delivery already being sent is
harmless anyway (the send claim is a conditional UPDATE), just wasted work.
For the same reason pending deliveries of a channel are left alone while that
channel's queue holds a backlog (``MAX_BACKLOG``): under a burst they are
most likely still waiting in the queue, not lost, and re-enqueueing them
would only add duplicates to the queue that is already behind.

:func:`delivery.sweep_unconfirmed` times out a ``sent`` delivery that the
provider never confirmed (no ``delivered``/``read`` receipt) within its
region's ``digital_cutoff_hours``: sent → failed_permanent with
``last_error="not confirmed by cut-off"``, audit event ``delivery.timed_out``,
and the notice's plan moves to its next channel in the same transaction.
Channels that never confirm (post) are left out by configuration.

Both are bounded (``BATCH_SIZE`` rows per kind per run, oldest first, on the
``(status, updated_at)`` index), work in short transactions, and may run
twice at once: on PostgreSQL each chunk locks its rows with ``FOR UPDATE SKIP
LOCKED`` so a second sweeper takes other rows; SQLite has no row locks, but
every transaction there takes the database write lock up front (``BEGIN
IMMEDIATE``, see settings), so two sweepers run one after the other and the
second finds the first one's rows already touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet

from cakra import clock
from cakra.audit.services import audit_event_record
from cakra.delivery.dispatch import (
    RETRY_BACKOFF_MAX_SECONDS,
    channel_backlogs,
    deliveries_batched,
    deliveries_publish,
)
from cakra.delivery.fallback import delivery_fallback_advance
from cakra.delivery.models import Channel, Delivery
from cakra.enforcement.models import Notice, Region

logger = structlog.get_logger(__name__)

LEASE_EXPIRED = "lease expired"
NOT_CONFIRMED = "not confirmed by cut-off"
# Rows per transaction. Touch-only chunks are cheap; chunks that write audit
# events hold the audit chain's head lock until they commit, which every
# worker recording an outcome waits for, so they stay small.
TOUCH_CHUNK = 1000
AUDITED_CHUNK = 100
# Notices whose owner has not acted yet. A confirmed notice proves the owner
# got the message, and a cancelled one must not be sent at all.
OPEN_NOTICE_STATUSES = (Notice.Status.ISSUED, Notice.Status.NOTIFIED)


@dataclass(frozen=True, slots=True, kw_only=True)
class SweeperSettings:
    pending_lease: timedelta
    sending_lease: timedelta
    retry_lease: timedelta
    batch_size: int
    max_backlog: int

    @classmethod
    def load(cls) -> SweeperSettings:
        options: Mapping[str, Any] = settings.CAKRA_SWEEPER
        return cls(
            pending_lease=timedelta(seconds=float(options["PENDING_LEASE_SECONDS"])),
            sending_lease=timedelta(seconds=float(options["SENDING_LEASE_SECONDS"])),
            # A retry is lost only once its longest possible countdown has passed.
            retry_lease=timedelta(seconds=RETRY_BACKOFF_MAX_SECONDS + float(options["RETRY_MARGIN_SECONDS"])),
            batch_size=int(options["BATCH_SIZE"]),
            max_backlog=int(options["MAX_BACKLOG"]),
        )


@dataclass(slots=True)
class StuckSweepReport:
    pending_requeued: int = 0
    sending_expired: int = 0
    retries_requeued: int = 0
    # Channels whose pending deliveries were left alone because of a backlog.
    backlogged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending_requeued": self.pending_requeued,
            "sending_expired": self.sending_expired,
            "retries_requeued": self.retries_requeued,
            "backlogged": self.backlogged,
        }


def _lock_skipping_taken(queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
    """Lock the selected rows, skipping rows another sweeper holds (PostgreSQL).

    SQLite has no row locks: there the surrounding transaction already holds
    the database write lock (BEGIN IMMEDIATE), which serialises sweepers.
    """
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def _requeue_on_commit(rows: list[tuple[str, str]]) -> None:
    """Publish send triggers for (delivery id, channel) after commit, in
    batches per channel on one producer.

    A broker failure loses nothing: the rows were touched, not sent, and the
    next sweep after the lease finds them again.
    """

    def publish() -> None:
        try:
            deliveries_publish(deliveries_batched(rows))
        except Exception as exc:  # noqa: BLE001 - any broker failure: the next sweep retries
            # The error's type only: broker errors may quote the broker URL.
            logger.error(  # noqa: TRY400 - see above: no traceback
                "delivery.sweep_publish_failed", total=len(rows), error=type(exc).__name__
            )

    if rows:
        transaction.on_commit(publish)


def _chunks(*, batch_size: int, chunk_size: int) -> Iterable[int]:
    """Sizes of successive chunks that together stay within ``batch_size``."""
    remaining = batch_size
    while remaining > 0:
        size = min(chunk_size, remaining)
        yield size
        remaining -= size


def _touch_and_requeue(
    *, status: str, older_than: datetime, now: datetime, batch_size: int, exclude_channels: Iterable[str] = ()
) -> int:
    """Re-enqueue up to ``batch_size`` deliveries in ``status`` untouched since ``older_than``."""
    excluded = list(exclude_channels)
    done = 0
    for size in _chunks(batch_size=batch_size, chunk_size=TOUCH_CHUNK):
        with transaction.atomic():
            candidates = Delivery.objects.filter(status=status, updated_at__lt=older_than).exclude(
                notice__status=Notice.Status.CANCELLED
            )
            if excluded:
                candidates = candidates.exclude(channel__in=excluded)
            rows = [
                (str(delivery_id), channel)
                for delivery_id, channel in _lock_skipping_taken(candidates)
                .order_by("updated_at")
                .values_list("id", "channel")[:size]
            ]
            if not rows:
                break
            # Conditional on the status: only rows still stuck are touched.
            Delivery.objects.filter(pk__in=[delivery_id for delivery_id, _ in rows], status=status).update(
                updated_at=now
            )
            _requeue_on_commit(rows)
        done += len(rows)
        if len(rows) < size:
            break
    return done


def _expire_sending_leases(*, older_than: datetime, now: datetime, batch_size: int) -> int:
    """Give back the leases of deliveries whose worker died mid-send, then send them again."""
    done = 0
    for size in _chunks(batch_size=batch_size, chunk_size=AUDITED_CHUNK):
        with transaction.atomic():
            rows = list(
                _lock_skipping_taken(Delivery.objects.filter(status=Delivery.Status.SENDING, updated_at__lt=older_than))
                .order_by("updated_at")
                .values_list("id", "channel", "notice_id", "notice__region__code", "attempt_count")[:size]
            )
            if not rows:
                break
            ids = [row[0] for row in rows]
            expired = Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SENDING).update(
                status=Delivery.Status.FAILED_TEMPORARY, last_error=LEASE_EXPIRED, updated_at=now
            )
            if expired != len(rows):
                # Only possible without row locks (another backend): audit what really changed.
                changed = set(
                    Delivery.objects.filter(
                        pk__in=ids, status=Delivery.Status.FAILED_TEMPORARY, updated_at=now, last_error=LEASE_EXPIRED
                    ).values_list("id", flat=True)
                )
                rows = [row for row in rows if row[0] in changed]
            for delivery_id, channel, notice_id, region_code, attempt in rows:
                audit_event_record(
                    actor_type="system",
                    action="delivery.lease_expired",
                    object_type="delivery",
                    object_id=str(delivery_id),
                    region_code=region_code,
                    data={
                        "notice": str(notice_id),
                        "channel": channel,
                        "attempt": attempt,
                        "status": Delivery.Status.FAILED_TEMPORARY,
                        "reason": LEASE_EXPIRED,
                    },
                )
            _requeue_on_commit([(str(row[0]), row[1]) for row in rows])
        done += len(rows)
        if len(ids) < size:
            break
    return done


def deliveries_sweep_stuck(*, now: datetime | None = None) -> StuckSweepReport:
    """Re-enqueue pending, sending and failed_temporary deliveries whose trigger was lost.

    Bounded and idempotent: each kind handles at most ``BATCH_SIZE`` rows,
    oldest first, and a row it handled is not handled again within its lease.
    Meant to run on its own (the beat task): each chunk then commits, and
    publishes its triggers, before the next one starts.
    """
    config = SweeperSettings.load()
    now = now or clock.now()
    report = StuckSweepReport()

    # Asking the broker costs a round trip: only when something looks stuck.
    if Delivery.objects.filter(status=Delivery.Status.PENDING, updated_at__lt=now - config.pending_lease).exists():
        for channel, waiting in channel_backlogs(Channel.values).items():
            if waiting is not None and waiting > config.max_backlog:
                report.backlogged.append(channel)
    report.pending_requeued = _touch_and_requeue(
        status=Delivery.Status.PENDING,
        older_than=now - config.pending_lease,
        now=now,
        batch_size=config.batch_size,
        exclude_channels=report.backlogged,
    )
    report.sending_expired = _expire_sending_leases(
        older_than=now - config.sending_lease, now=now, batch_size=config.batch_size
    )
    report.retries_requeued = _touch_and_requeue(
        status=Delivery.Status.FAILED_TEMPORARY,
        older_than=now - config.retry_lease,
        now=now,
        batch_size=config.batch_size,
    )
    if report.pending_requeued or report.sending_expired or report.retries_requeued or report.backlogged:
        logger.info("delivery.sweep_stuck", **report.as_dict())
    return report


def _time_out(*, deliveries: list[Delivery], now: datetime) -> list[Delivery]:
    """sent → failed_permanent for each delivery still sent, with its audit event and fallback."""
    ids = [delivery.pk for delivery in deliveries]
    changed = Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SENT).update(
        status=Delivery.Status.FAILED_PERMANENT, last_error=NOT_CONFIRMED, updated_at=now
    )
    if changed != len(deliveries):
        # Only possible without row locks (another backend): act on what really changed.
        still = set(
            Delivery.objects.filter(
                pk__in=ids, status=Delivery.Status.FAILED_PERMANENT, updated_at=now, last_error=NOT_CONFIRMED
            ).values_list("id", flat=True)
        )
        deliveries = [delivery for delivery in deliveries if delivery.pk in still]
    for delivery in deliveries:
        notice = delivery.notice
        hours = notice.region.cutoff_hours_for(delivery.channel)
        audit_event_record(
            actor_type="system",
            action="delivery.timed_out",
            object_type="delivery",
            object_id=str(delivery.id),
            region_code=notice.region.code,
            data={
                "notice": str(notice.id),
                "channel": delivery.channel,
                "status": Delivery.Status.FAILED_PERMANENT,
                "reason": NOT_CONFIRMED,
                "cutoff_hours": hours,
            },
        )
        delivery.status = Delivery.Status.FAILED_PERMANENT
        delivery.last_error = NOT_CONFIRMED
        delivery_fallback_advance(delivery=delivery, reason=f"{NOT_CONFIRMED} ({hours} h)")
    return deliveries


def deliveries_sweep_unconfirmed(*, now: datetime | None = None) -> int:
    """Time out sent deliveries not confirmed within their region's cut-off and fall back.

    Only channels in ``CAKRA_UNCONFIRMED_TIMEOUT_CHANNELS`` are timed out,
    each after its region's cut-off for that channel
    (:meth:`~cakra.enforcement.models.Region.cutoff_hours_for`); a cut-off of
    0 never times out. The window
    runs from the delivery's last change (``updated_at``, the indexed column;
    normally the moment it was sent) and sending itself must also be that
    old. Bounded (``BATCH_SIZE`` per run) and idempotent. Returns how many
    deliveries were timed out. Meant to run on its own, like the stuck sweep.
    """
    channels = list(settings.CAKRA_UNCONFIRMED_TIMEOUT_CHANNELS)
    if not channels:
        return 0
    config = SweeperSettings.load()
    now = now or clock.now()
    # Few distinct windows exist (most regions keep the defaults): one index
    # range scan per (channel, window) rather than one per region.
    windows: dict[tuple[str, int], list[int]] = {}
    for region in Region.objects.only("pk", "digital_cutoff_hours", "channel_cutoff_hours"):
        for channel in channels:
            hours = region.cutoff_hours_for(channel)
            if hours > 0:
                windows.setdefault((channel, hours), []).append(region.pk)
    done = 0
    for (channel, hours), region_ids in sorted(windows.items()):
        cutoff = now - timedelta(hours=hours)
        for size in _chunks(batch_size=config.batch_size - done, chunk_size=AUDITED_CHUNK):
            with transaction.atomic():
                deliveries = list(
                    _lock_skipping_taken(
                        Delivery.objects.filter(
                            status=Delivery.Status.SENT,
                            channel=channel,
                            updated_at__lt=cutoff,
                            sent_at__lt=cutoff,
                            notice__region_id__in=region_ids,
                            notice__status__in=OPEN_NOTICE_STATUSES,
                        )
                    )
                    .select_related("notice__region")
                    .order_by("updated_at")[:size]
                )
                if not deliveries:
                    break
                timed_out = _time_out(deliveries=deliveries, now=now)
            done += len(timed_out)
            if len(deliveries) < size:
                break
    if done:
        logger.info("delivery.sweep_unconfirmed", timed_out=done)
    return done
