"""Writes on deliveries: the plan of a new notice.

Sending lives in cakra.delivery.sending; tasks only call services.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from cakra.audit.services import audit_record
from cakra.delivery.models import CHANNEL_CONTACT_KIND, Channel, Delivery
from cakra.enforcement.models import Notice
from cakra.registry.models import ContactPoint


def delivery_enqueue_on_commit(*, delivery: Delivery) -> None:
    """Trigger the send after the surrounding transaction commits (ids only)."""
    from cakra.delivery.tasks import delivery_send_task  # tasks import services: import late

    delivery_id, queue = str(delivery.id), delivery.channel
    transaction.on_commit(lambda: delivery_send_task.apply_async(args=(delivery_id,), queue=queue))


def delivery_plan_create(*, notice: Notice) -> list[Delivery]:
    """One delivery per channel of the region's order that is enabled here and
    for which the owner has a contact point; the first is sent, the rest wait
    for fallback."""
    contacts: dict[str, ContactPoint] = {}
    for contact in ContactPoint.objects.filter(owner_id=notice.owner_id, is_active=True).order_by("created_at"):
        contacts.setdefault(contact.kind, contact)
    deliveries: list[Delivery] = []
    for channel in notice.region.channel_order:
        if channel not in settings.CAKRA_ENABLED_CHANNELS or channel not in Channel.values:
            continue
        chosen = contacts.get(CHANNEL_CONTACT_KIND[Channel(channel)])
        if chosen is None:
            continue
        deliveries.append(
            Delivery(
                notice=notice,
                channel=channel,
                step=len(deliveries) + 1,
                contact_point=chosen,
                status=Delivery.Status.PENDING if not deliveries else Delivery.Status.PLANNED,
            )
        )
    Delivery.objects.bulk_create(deliveries)
    audit_record(
        actor_type="system",
        action="delivery.planned",
        object_type="notice",
        object_id=str(notice.id),
        region_code=notice.region.code,
        data={"channels": [d.channel for d in deliveries]},
    )
    if deliveries:
        delivery_enqueue_on_commit(delivery=deliveries[0])
    return deliveries
