"""Writes on deliveries: the plans of new notices, and their first triggers.

Sending lives in cakra.delivery.sending; tasks only call services.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import structlog
from django.conf import settings
from django.db import transaction

from cakra.audit.services import AuditEntry, audit_record_many
from cakra.db import rows_insert
from cakra.delivery.models import CHANNEL_CONTACT_KIND, Channel, Delivery
from cakra.enforcement.models import Notice
from cakra.registry.models import ContactPoint

logger = structlog.get_logger(__name__)


# A send message to publish: (queue, delivery ids, countdown in seconds).
SendBatch = tuple[str, list[str], float]


def deliveries_batched(triggers: Sequence[tuple[str, str]]) -> list[SendBatch]:
    """(delivery id, channel) pairs as send messages to publish at once: one
    per channel and ``CAKRA_SEND_BATCH`` deliveries, on the channel's queue."""
    from cakra.delivery.sending import send_batch_size  # sending imports fallback, which imports us

    by_channel: dict[str, list[str]] = {}
    for delivery_id, channel in triggers:
        by_channel.setdefault(channel, []).append(delivery_id)
    size = send_batch_size()
    return [
        (channel, ids[start : start + size], 0.0)
        for channel, ids in by_channel.items()
        for start in range(0, len(ids), size)
    ]


def deliveries_publish(batches: Sequence[SendBatch]) -> None:
    """Publish send messages (ids only) on one broker connection. A broker
    failure is raised; nothing is lost by it: the deliveries wait in pending
    or failed_temporary, where the sweeper finds them after its lease."""
    if not batches:
        return
    from cakra.delivery.tasks import delivery_send_batch_task  # tasks import services: import late

    with delivery_send_batch_task.app.producer_or_acquire() as producer:
        for queue, ids, countdown in batches:
            if not countdown:  # now: no ETA header for the worker to hold the message on
                delivery_send_batch_task.apply_async(args=(ids,), queue=queue, producer=producer)
                continue
            delivery_send_batch_task.apply_async(args=(ids,), queue=queue, countdown=countdown, producer=producer)
            logger.info("delivery_send_later", queue=queue, deliveries=len(ids), countdown=round(countdown, 3))


def delivery_enqueue_many_on_commit(*, deliveries: Sequence[Delivery]) -> None:
    """Trigger the sends after the surrounding transaction commits (ids only,
    in batches per channel)."""
    if not deliveries:
        return
    triggers = [(str(delivery.id), delivery.channel) for delivery in deliveries]
    transaction.on_commit(lambda: deliveries_publish(deliveries_batched(triggers)))


def delivery_enqueue_on_commit(*, delivery: Delivery) -> None:
    delivery_enqueue_many_on_commit(deliveries=[delivery])


def delivery_plans_create(*, notices: Sequence[Notice], audit_first: Sequence[AuditEntry] = ()) -> list[Delivery]:
    """One delivery per channel of each notice's region order that is enabled
    here and for which the owner has a contact point; each first step is
    sent, the rest wait for fallback. One contact query, one insert and one
    audit append for all the notices (``audit_first``: the caller's events
    of the same transaction, appended before the plans'); call inside the
    issuing transaction."""
    # Ids and kinds only: loading the contact points themselves would decrypt
    # every address here, where none is read (the sender decrypts the one it uses).
    contacts: dict[tuple[UUID, str], int] = {}
    owner_ids = {notice.owner_id for notice in notices if notice.owner_id is not None}
    for contact_id, owner_id, kind in (
        ContactPoint.objects.filter(owner_id__in=owner_ids, is_active=True)
        .order_by("created_at", "pk")
        .values_list("id", "owner_id", "kind")
    ):
        contacts.setdefault((owner_id, kind), contact_id)
    deliveries: list[Delivery] = []
    first_steps: list[Delivery] = []
    entries: list[AuditEntry] = list(audit_first)
    for notice in notices:
        plan: list[Delivery] = []
        if notice.owner_id is None:
            continue  # only a notice unlinked by the retention schedule has no owner; nothing to send
        for channel in notice.region.channel_order:
            if channel not in settings.CAKRA_ENABLED_CHANNELS or channel not in Channel.values:
                continue
            chosen = contacts.get((notice.owner_id, CHANNEL_CONTACT_KIND[Channel(channel)]))
            if chosen is None:
                continue
            plan.append(
                Delivery(
                    notice=notice,
                    channel=channel,
                    step=len(plan) + 1,
                    contact_point_id=chosen,
                    status=Delivery.Status.PENDING if not plan else Delivery.Status.PLANNED,
                )
            )
        deliveries.extend(plan)
        first_steps.extend(plan[:1])
        entries.append(
            AuditEntry(
                actor_type="system",
                action="delivery.planned",
                object_type="notice",
                object_id=str(notice.id),
                region_code=notice.region.code,
                data={"channels": [d.channel for d in plan]},
            )
        )
    rows_insert(deliveries)
    audit_record_many(entries)
    delivery_enqueue_many_on_commit(deliveries=first_steps)
    return deliveries
