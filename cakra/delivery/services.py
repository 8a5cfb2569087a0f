"""Writes on deliveries: issuing notices with their plans, and the plans' first triggers.

:func:`notices_issue` is the one way a notice comes to exist, for an
officer's validation and a pre-validated key's intake alike: it is written in
the transaction that validates its violation, enforcement builds the notices
(number, verification code, fine, deadline), this module plans their
deliveries, and the whole issue (the caller's events, the notices', the
plans') is one append to the audit chain, so the chain's head moves once per
issue.

Sending lives in :mod:`cakra.delivery.sending`, recording its outcomes in
:mod:`cakra.delivery.outcomes`; publishing in :mod:`cakra.delivery.dispatch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

import structlog
from django.conf import settings

from cakra.audit.services import AuditEntry, audit_events_record
from cakra.db import rows_insert
from cakra.delivery.dispatch import deliveries_enqueue_on_commit
from cakra.delivery.models import CHANNEL_CONTACT_KIND, Channel, Delivery
from cakra.enforcement.models import Notice, Region, Violation
from cakra.enforcement.services import notices_create
from cakra.registry.models import ContactPoint

logger = structlog.get_logger(__name__)


def _region_sends_on(region: Region, channel: str) -> bool:
    """Whether ``region`` has its official sender identity on ``channel``: a
    message from anyone else is what a scammer would send, so a region
    without one is not planned on that channel at all."""
    if channel == Channel.WHATSAPP:
        return bool(region.whatsapp_phone_number_id)
    if channel == Channel.SMS:
        return bool(region.sms_sender_id)
    if channel == Channel.EMAIL:
        return bool(region.email_from_address)
    return channel in Channel.values


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
            if channel not in settings.CAKRA_ENABLED_CHANNELS or not _region_sends_on(notice.region, channel):
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
    audit_events_record(entries)
    deliveries_enqueue_on_commit(triggers=[(str(delivery.id), delivery.channel) for delivery in first_steps])
    return deliveries


def notices_issue(
    *,
    violations: Sequence[Violation],
    actor_type: str,
    actor_id: str,
    owners: Mapping[UUID, UUID] | None = None,
    audit_first: Sequence[AuditEntry] = (),
) -> list[Notice]:
    """Issue the notices of validated violations, with their delivery plans:
    one insert per table and one audit append for all of them, the first
    steps sent after commit. Call inside the validating transaction.

    ``owners`` (vehicle id -> owner id), when the caller already read them,
    saves a query. ``audit_first`` are the caller's own events of the same
    transaction (the violations received, validated): they go in the same
    append, before the notices'.
    """
    notices, issued = notices_create(violations=violations, actor_type=actor_type, actor_id=actor_id, owners=owners)
    delivery_plans_create(notices=notices, audit_first=[*audit_first, *issued])
    return notices
