"""Reads on deliveries: what a worker sends from, and a notice's timeline."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.db.models import Q

from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery
from cakra.enforcement.models import Notice, Region
from cakra.registry.models import ContactPoint
from cakra.security.fields import EncryptedTextField

# What a worker reads to send a delivery, column by column: the message's
# fields, the recipient, and what recording the outcome needs. Nothing else:
# a full Delivery with its contact point, notice, region, article, violation
# and vehicle is seven model instances, with Model initialisation and eight
# time-zone-aware datetime loads, and loading the vehicle decrypts its chassis
# and engine numbers, which no message shows (several times the worker CPU of
# these columns: docs/performance.md, "Measured choices").
# _MESSAGE_COLUMNS are in the order of NoticeForMessage's fields.
_SEND_COLUMNS = (
    "id",
    "notice_id",
    "channel",
    "step",
    "attempt_count",
    "accepted_reference",
    "contact_point__value",
    "notice__region__code",
    "notice__region__email_from_address",
    "notice__region__email_from_name",
    "notice__region__whatsapp_phone_number_id",
    "notice__region__whatsapp_display_name",
    "notice__region__sms_sender_id",
)
_MESSAGE_COLUMNS = (
    "notice__number",
    "notice__region__name",
    "notice__region__timezone",
    "notice__vehicle__plate",
    "notice__violation__captured_at",
    "notice__violation__location",
    "notice__article__code",
    "notice__article__law",
    "notice__article__title_id",
    "notice__article__title_en",
    "notice__fine_amount",
    "notice__confirm_by",
    "notice__verification_code",
)
# What the two encrypted values are bound to (cakra.security.fields): the
# contact point's (owner, kind, value hash); the notice's id is in _SEND_COLUMNS.
_RECIPIENT_FIELD = ContactPoint._meta.get_field("value")  # noqa: SLF001 - Django's documented Options API
_BINDING_COLUMNS = tuple(f"contact_point__{name}" for name in _RECIPIENT_FIELD.bound_to)
_CODE_FIELD = Notice._meta.get_field("verification_code")  # noqa: SLF001


# Plain slotted classes, not frozen ones: a frozen dataclass sets each field
# through object.__setattr__, which makes building one several times slower,
# and nothing writes to these.


@dataclass(slots=True)
class NoticeForMessage:
    """What a notice's message is rendered from (cakra.delivery.messages),
    and nothing more: no owner, no address, no evidence."""

    number: str
    region_name: str
    region_timezone: str
    plate: str
    captured_at: datetime
    location: str
    article_code: str
    article_law: str
    article_title_id: str
    article_title_en: str
    fine_amount: int
    confirm_by: date
    verification_code: str


@dataclass(slots=True)
class DeliveryForSend:
    """A claimed delivery as the worker sends and records it: plain values read
    in one query (:func:`deliveries_get_for_send`), not model instances.

    ``reference`` is the id as text, computed once: it is the message's
    idempotency reference, the audit events' object id and what retries
    carry; ``notice_reference`` the notice id's, for its audit events.
    ``attempt_count`` is the count after the claim (this attempt's number).
    """

    pk: uuid.UUID
    notice_id: uuid.UUID
    channel: str
    step: int
    attempt_count: int
    accepted_reference: str  # set when an earlier, interrupted attempt was accepted
    recipient: str  # the contact point's value, decrypted
    region_code: str
    email_from_address: str
    email_from_name: str
    whatsapp_phone_number_id: str
    whatsapp_display_name: str
    sms_sender_id: str
    notice: NoticeForMessage
    reference: str = field(init=False)
    notice_reference: str = field(init=False)

    def __post_init__(self) -> None:
        self.reference = str(self.pk)
        self.notice_reference = str(self.notice_id)


def deliveries_get_for_send(*, delivery_ids: Sequence[Any]) -> list[DeliveryForSend]:
    """Deliveries with everything their messages are rendered from, in one
    query, in the order of ``delivery_ids`` (missing ones left out).

    Two values are decrypted per delivery, the recipient and the
    verification code: the two the message shows.
    """
    found: dict[Any, DeliveryForSend] = {}
    for (
        pk,
        notice_id,
        channel,
        step,
        attempt_count,
        accepted_reference,
        recipient,
        region_code,
        from_address,
        from_name,
        whatsapp_phone_number_id,
        whatsapp_display_name,
        sms_sender_id,
        *message,
        contact_owner_id,
        contact_kind,
        contact_value_hash,
    ) in Delivery.objects.filter(pk__in=delivery_ids).values_list(*_SEND_COLUMNS, *_MESSAGE_COLUMNS, *_BINDING_COLUMNS):
        assert isinstance(_RECIPIENT_FIELD, EncryptedTextField)  # noqa: S101 - declared so in the models
        assert isinstance(_CODE_FIELD, EncryptedTextField)  # noqa: S101
        message[-1] = _CODE_FIELD.open_value(message[-1], bound_values=(notice_id,))
        found[pk] = DeliveryForSend(
            pk=pk,
            notice_id=notice_id,
            channel=channel,
            step=step,
            attempt_count=attempt_count,
            accepted_reference=accepted_reference,
            recipient=_RECIPIENT_FIELD.open_value(
                recipient, bound_values=(contact_owner_id, contact_kind, contact_value_hash)
            ),
            region_code=region_code,
            email_from_address=from_address,
            email_from_name=from_name,
            whatsapp_phone_number_id=whatsapp_phone_number_id,
            whatsapp_display_name=whatsapp_display_name,
            sms_sender_id=sms_sender_id,
            notice=NoticeForMessage(*message),
        )
    return [found[pk] for pk in delivery_ids if pk in found]


def email_sender_domains() -> list[str]:
    """Every domain regions send email from: each must publish the DKIM record."""
    addresses = Region.objects.exclude(email_from_address="").values_list("email_from_address", flat=True)
    return sorted({address.rpartition("@")[2].lower() for address in addresses})


# --- The notice's timeline ------------------------------------------------------
# Audit data keys a timeline may show. Audit events carry ids and codes, never
# personal data, and the timeline reads only these keys of them anyway.
TIMELINE_MAX_DETAIL = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    """One thing that happened to a notice or one of its deliveries.

    ``event`` is the audit action (``delivery.fallback``, ``delivery.timed_out``…);
    ``channel`` the delivery's channel ("" for notice-wide events; for a
    fallback, the channel given up and ``to_channel`` the one tried next);
    ``detail`` one English line for machine clients, built from the other fields.
    """

    at: datetime
    event: str
    channel: str = ""
    to_channel: str = ""
    step: int | None = None
    attempt: int | None = None
    provider: str = ""
    outcome: str = ""
    reason: str = ""
    detail: str = ""


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value)


def _number(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _planned(data: Mapping[str, Any]) -> str:
    channels = data.get("channels")
    listed = [str(item) for item in channels] if isinstance(channels, list) else []
    return "plan: " + " → ".join(listed) if listed else "no channel: no contact point for any enabled channel"


def _sent(data: Mapping[str, Any]) -> str:
    duplicate = " (the provider already had it)" if _text(data, "outcome") == "duplicate" else ""
    template = f", template {_text(data, 'template')}" if _text(data, "template") else ""
    return f"attempt {_number(data, 'attempt')} via {_text(data, 'provider')}: accepted{duplicate}{template}"


def _failed(data: Mapping[str, Any]) -> str:
    then = "final, no retry" if data.get("final") else "will retry"
    return (
        f"attempt {_number(data, 'attempt')} via {_text(data, 'provider')}: "
        f"{_text(data, 'outcome')} ({_text(data, 'error')}); {then}"
    )


_TIMELINE_DETAILS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "notice.issued": lambda data: f"article {_text(data, 'article')}",
    "delivery.planned": _planned,
    "delivery.sent": _sent,
    "delivery.failed": _failed,
    "delivery.lease_expired": lambda data: (
        f"attempt {_number(data, 'attempt')} lost with its worker ({_text(data, 'reason')}); sent again"
    ),
    "delivery.timed_out": lambda data: (
        f"{_text(data, 'reason')} (no delivery receipt within {_text(data, 'cutoff_hours')} h)"
    ),
    "delivery.fallback": lambda data: (
        f"{_text(data, 'from_channel')} → {_text(data, 'to_channel')}: {_text(data, 'reason')}"
    ),
    "delivery.plan_exhausted": lambda data: f"no channel left after {_text(data, 'channel')}: {_text(data, 'reason')}",
    "notice.notified": lambda data: f"first message accepted by a provider ({_text(data, 'channel')})",
    "delivery.receipt": lambda data: (
        f"provider reports {_text(data, 'event')} ({_text(data, 'outcome')}); status {_text(data, 'status')}"
    ),
}


def _timeline_detail(event: str, data: Mapping[str, Any]) -> str:
    describe = _TIMELINE_DETAILS.get(event)
    if describe is not None:
        return describe(data)
    # An event this selector does not know yet (a later feature): its status,
    # outcome and reason, which every delivery event carries.
    return "; ".join(f"{key} {_text(data, key)}" for key in ("status", "outcome", "reason") if _text(data, key))


def notice_timeline(*, notice: Notice) -> list[TimelineEntry]:
    """What happened to ``notice`` and each step of its delivery plan, oldest first.

    Issue, plan, every attempt with its outcome, provider and error, leases
    given back by the sweeper, receipts, timeouts and every fallback move,
    read from the audit trail (the one record of every state change), in
    the order they were recorded. One query for the audit events, plus one for the
    deliveries unless the caller prefetched them. No personal data: audit
    events hold none, and only known keys of them are read.
    """
    steps = {str(delivery.id): delivery for delivery in notice.deliveries.all()}
    events = (
        AuditEvent.objects.filter(
            Q(object_type="notice", object_id=str(notice.id)) | Q(object_type="delivery", object_id__in=list(steps))
        )
        .only("chain", "seq", "created_at", "action", "object_type", "object_id", "data")
        # Time first: the events come from several chains (one per writing
        # process: the worker records the send, the web app the receipt), and
        # a sequence number orders events only within its own chain.
        .order_by("created_at", "chain", "seq")
    )
    entries: list[TimelineEntry] = []
    for event in events:
        data: Mapping[str, Any] = event.data if isinstance(event.data, dict) else {}
        delivery = steps.get(event.object_id) if event.object_type == "delivery" else None
        if event.action == "delivery.fallback":
            channel, delivery = _text(data, "from_channel"), steps.get(_text(data, "from_delivery"))
        else:
            channel = delivery.channel if delivery is not None else _text(data, "channel")
        entries.append(
            TimelineEntry(
                at=event.created_at,
                event=event.action,
                channel=channel,
                to_channel=_text(data, "to_channel"),
                step=delivery.step if delivery is not None else None,
                attempt=_number(data, "attempt"),
                provider=_text(data, "provider"),
                # A receipt's outcome is what the provider reported (delivered, read, failed…).
                outcome=_text(data, "event") if event.action == "delivery.receipt" else _text(data, "outcome"),
                reason=_text(data, "error") or _text(data, "reason"),
                detail=_timeline_detail(event.action, data)[:TIMELINE_MAX_DETAIL],
            )
        )
    return entries
