"""Writes on deliveries: the plans of new notices, and their first triggers.

Sending lives in cakra.delivery.sending; tasks only call services.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import transaction

from cakra.audit.services import AuditEntry, audit_record_many
from cakra.delivery.models import CHANNEL_CONTACT_KIND, Channel, Delivery
from cakra.enforcement.models import Notice
from cakra.registry.models import ContactPoint


def deliveries_publish(triggers: Sequence[tuple[str, str]]) -> int:
    """Publish send triggers for (delivery id, channel) pairs now: one batch
    message per channel and ``CAKRA_SEND_BATCH`` deliveries, all on one
    broker connection. Returns how many deliveries were published before a
    broker failure (which is raised)."""
    from cakra.delivery.sending import send_batch_size  # sending imports fallback, which imports us
    from cakra.delivery.tasks import delivery_send_batch_task  # tasks import services: import late

    by_channel: dict[str, list[str]] = {}
    for delivery_id, channel in triggers:
        by_channel.setdefault(channel, []).append(delivery_id)
    size = send_batch_size()
    published = 0
    with delivery_send_batch_task.app.producer_or_acquire() as producer:
        for channel, ids in by_channel.items():
            for start in range(0, len(ids), size):
                batch = ids[start : start + size]
                delivery_send_batch_task.apply_async(args=(batch,), queue=channel, producer=producer)
                published += len(batch)
    return published


def delivery_enqueue_many_on_commit(*, deliveries: Sequence[Delivery]) -> None:
    """Trigger the sends after the surrounding transaction commits (ids only,
    in batches per channel)."""
    if not deliveries:
        return
    triggers = [(str(delivery.id), delivery.channel) for delivery in deliveries]
    transaction.on_commit(lambda: deliveries_publish(triggers))


def delivery_enqueue_on_commit(*, delivery: Delivery) -> None:
    delivery_enqueue_many_on_commit(deliveries=[delivery])


def delivery_plans_create(*, notices: Sequence[Notice]) -> list[Delivery]:
    """One delivery per channel of each notice's region order that is enabled
    here and for which the owner has a contact point; each first step is
    sent, the rest wait for fallback. One contact query and one insert for
    all the notices; call inside the issuing transaction."""
    if not notices:
        return []
    contacts: dict[tuple[object, str], ContactPoint] = {}
    owner_ids = {notice.owner_id for notice in notices}
    for contact in ContactPoint.objects.filter(owner_id__in=owner_ids, is_active=True).order_by("created_at", "pk"):
        contacts.setdefault((contact.owner_id, contact.kind), contact)
    deliveries: list[Delivery] = []
    first_steps: list[Delivery] = []
    entries: list[AuditEntry] = []
    for notice in notices:
        plan: list[Delivery] = []
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
                    contact_point=chosen,
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
    Delivery.objects.bulk_create(deliveries)
    audit_record_many(entries)
    delivery_enqueue_many_on_commit(deliveries=first_steps)
    return deliveries
