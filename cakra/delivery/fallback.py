"""Fallback across channels: when a step of a notice's plan fails for good,
the next planned step is sent.

Called inside the transaction that records the failure (a failed send, a
"failed" receipt, a delivery timed out by the sweeper), so the failure and
the move to the next channel commit together and the next send is enqueued
only after that commit.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from cakra.audit.services import audit_event_record
from cakra.delivery.dispatch import deliveries_enqueue_on_commit
from cakra.delivery.models import Delivery


def delivery_fallback_advance(*, delivery: Delivery, reason: str) -> Delivery | None:
    """Activate the step after ``delivery`` (planned → pending) and enqueue it.

    Returns the activated delivery, or None when the plan has no further step
    or the next step was already activated (a second failure report of the
    same step, e.g. a duplicate receipt, changes nothing).
    """
    if not transaction.get_connection().in_atomic_block:
        msg = "delivery_fallback_advance must run inside the transaction that records the failure"
        raise RuntimeError(msg)
    following = (
        Delivery.objects.filter(notice_id=delivery.notice_id, step__gt=delivery.step, status=Delivery.Status.PLANNED)
        .order_by("step")
        .first()
    )
    notice = delivery.notice
    if following is None:
        audit_event_record(
            actor_type="system",
            action="delivery.plan_exhausted",
            object_type="notice",
            object_id=str(notice.id),
            region_code=notice.region.code,
            data={"last_delivery": str(delivery.id), "channel": delivery.channel, "reason": reason},
        )
        return None
    activated = Delivery.objects.filter(pk=following.pk, status=Delivery.Status.PLANNED).update(
        status=Delivery.Status.PENDING, updated_at=timezone.now()
    )
    if activated != 1:
        return None
    following.status = Delivery.Status.PENDING
    audit_event_record(
        actor_type="system",
        action="delivery.fallback",
        object_type="notice",
        object_id=str(notice.id),
        region_code=notice.region.code,
        data={
            "from_delivery": str(delivery.id),
            "from_channel": delivery.channel,
            "to_delivery": str(following.id),
            "to_channel": following.channel,
            "reason": reason,
        },
    )
    deliveries_enqueue_on_commit(triggers=[(str(following.id), following.channel)])
    return following
