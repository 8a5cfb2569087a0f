"""Receipts: what providers report about deliveries after accepting them.

One entry point, :func:`delivery_record_receipt` (and its batch form
:func:`delivery_record_receipts`, for webhooks that post many), for every channel's
receipts (email event webhooks, WhatsApp status webhooks, SMPP
``deliver_sm``, postal tracking). It is idempotent and safe against the
ways receipts really arrive:

- **twice** (the provider retried, or someone replayed a captured body):
  the event id is unique per provider, the second copy changes nothing;
- **late or out of order** (read before delivered, a bounce after
  delivered): the state machine in :mod:`cakra.delivery.states` only moves
  forward;
- **before we know the reference** (the provider reports faster than the
  worker records the hand-over, or the message was never ours): answered as
  unknown and nothing is stored; the provider may report it again later.

Everything a receipt changes (the receipt row, the delivery's status, the
audit event, and on a bounce the fallback to the next channel) commits in
one transaction. A batch is recorded in chunks, each one transaction with
a few queries per receipt (one conditional UPDATE each, the rest per
chunk); if a concurrent request stored one of the chunk's event ids after we
looked, the chunk rolls back whole and is recorded again receipt by receipt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import structlog
from django.db import IntegrityError, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_record_many
from cakra.delivery.fallback import delivery_fallback_advance
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.delivery.states import delivery_transition, receipt_transition

logger = structlog.get_logger(__name__)

MAX_DETAIL_LENGTH = 200
# Providers quote the recipient in bounce texts ("550 5.1.1 <budi@…>: no such
# user"); the stored and audited detail keeps the reason, not the person.
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
# Eight or more digits, optionally grouped: phone numbers and NIKs, not SMTP
# status codes such as "550 5.1.1".
_LONG_NUMBER = re.compile(r"\+?\d(?:[ .\-]?\d){7,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class ReceiptResult(StrEnum):
    APPLIED = "applied"  # the delivery moved forward
    RECORDED = "recorded"  # stored; informational by design (deferred)
    IGNORED_OLDER = "ignored_older"  # stored; late or out of order, the delivery is already at or past it
    DUPLICATE = "duplicate"  # this provider's event id was seen before: nothing changed
    UNKNOWN_REFERENCE = "unknown_reference"  # no delivery of this provider has the reference: nothing stored


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    result: ReceiptResult
    delivery_id: str = ""
    status: str = ""  # the delivery's status after the receipt ("" when nothing was stored)
    fallback_delivery_id: str = ""  # the next step activated by a failure, if any


class _DuplicateReceiptError(Exception):
    """Raised out of the receipt's transaction so everything it did rolls back."""


def receipt_detail_clean(text: str) -> str:
    """The provider's reason, without addresses, phone numbers or control characters."""
    text = _CONTROL.sub(" ", text)
    text = _ADDRESS.sub("[address]", text)
    text = _LONG_NUMBER.sub("[number]", text)
    return " ".join(text.split())[:MAX_DETAIL_LENGTH]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptReport:
    """One receipt, already translated into our vocabulary (``DeliveryReceipt.Event``)."""

    provider_reference: str
    event: str
    occurred_at: datetime
    event_id: str
    detail: str = ""


# Receipts of one batch commit in transactions of this many: one commit (one
# fsync) and one audit-chain append per chunk instead of per receipt, while
# the chain head's lock, held until commit, is released often.
BATCH_CHUNK = 100


def delivery_record_receipt(
    *,
    provider: str,
    provider_reference: str,
    event: str,
    occurred_at: datetime,
    event_id: str,
    detail: str = "",
) -> ReceiptOutcome:
    """Record one receipt and apply it to the delivery it is about.

    ``provider`` is the provider name deliveries carry (``Delivery.provider``),
    ``provider_reference`` the reference it returned when it accepted the
    message, ``event`` one of ``DeliveryReceipt.Event``, ``event_id`` the
    provider's unique id of this report. Raises ValueError on an unknown
    event or a naive ``occurred_at`` (a programming error, not provider input).
    """
    report = ReceiptReport(
        provider_reference=provider_reference,
        event=event,
        occurred_at=occurred_at,
        event_id=event_id,
        detail=detail,
    )
    return delivery_record_receipts(provider=provider, reports=[report])[0]


def delivery_record_receipts(*, provider: str, reports: list[ReceiptReport]) -> list[ReceiptOutcome]:
    """Record a provider's batch of receipts; one outcome per report, in order.

    Inside a caller's transaction each chunk is a savepoint, so a duplicate
    never undoes its neighbours or the caller's work.
    """
    for report in reports:
        if report.event not in DeliveryReceipt.Event.values:
            raise ValueError(f"unknown receipt event {report.event!r}")
        if timezone.is_naive(report.occurred_at):
            raise ValueError("occurred_at must be timezone-aware")
    outcomes: list[ReceiptOutcome] = []
    for start in range(0, len(reports), BATCH_CHUNK):
        chunk = reports[start : start + BATCH_CHUNK]
        try:
            recorded = _record_chunk(provider=provider, reports=chunk)
        except _DuplicateReceiptError:
            # Another request stored one of these event ids after the chunk
            # looked (it has committed by now): record them one by one.
            recorded = [item for report in chunk for item in _record_alone(provider=provider, report=report)]
        for item in recorded:
            item.log(provider=provider)
        outcomes.extend(item.outcome for item in recorded)
    return outcomes


@dataclass(frozen=True, slots=True)
class _Recorded:
    outcome: ReceiptOutcome
    event_id: str = ""

    def log(self, *, provider: str) -> None:
        """Logged once the chunk is recorded: a rolled-back chunk leaves no line about what did not happen."""
        outcome = self.outcome
        if outcome.result == ReceiptResult.UNKNOWN_REFERENCE:
            logger.info("delivery_receipt_unknown_reference", provider=provider, event_id=self.event_id)
        elif outcome.status == Delivery.Status.FAILED_PERMANENT and outcome.result == ReceiptResult.APPLIED:
            logger.info(
                "delivery_receipt_failed",
                provider=provider,
                event_id=self.event_id,
                delivery_id=outcome.delivery_id,
                fallback_delivery_id=outcome.fallback_delivery_id,
            )


def _record_alone(*, provider: str, report: ReceiptReport) -> list[_Recorded]:
    try:
        return _record_chunk(provider=provider, reports=[report])
    except _DuplicateReceiptError:
        return [_Recorded(outcome=ReceiptOutcome(result=ReceiptResult.DUPLICATE), event_id=report.event_id)]


@transaction.atomic
def _record_chunk(*, provider: str, reports: list[ReceiptReport]) -> list[_Recorded]:
    deliveries = {
        delivery.provider_reference: delivery
        for delivery in Delivery.objects.select_related("notice__region").filter(
            provider=provider, provider_reference__in={report.provider_reference for report in reports}
        )
    }
    seen = set(
        DeliveryReceipt.objects.filter(
            provider=provider, event_id__in={report.event_id for report in reports}
        ).values_list("event_id", flat=True)
    )
    received_at = timezone.now()
    recorded: list[_Recorded] = []
    receipts: list[DeliveryReceipt] = []
    entries: list[AuditEntry] = []
    failed: list[tuple[int, Delivery, str]] = []
    for report in reports:
        delivery = deliveries.get(report.provider_reference)
        if report.event_id in seen:
            recorded.append(_Recorded(ReceiptOutcome(result=ReceiptResult.DUPLICATE), report.event_id))
            continue
        if delivery is None:
            recorded.append(_Recorded(ReceiptOutcome(result=ReceiptResult.UNKNOWN_REFERENCE), report.event_id))
            continue
        seen.add(report.event_id)
        detail = receipt_detail_clean(report.detail)
        # A provider's clock ahead of ours must not date a delivery in the future.
        occurred_at = min(report.occurred_at, received_at)
        transition = receipt_transition(report.event)
        moved = transition is not None and delivery_transition(
            delivery_id=delivery.pk,
            from_states=transition.from_states,
            to=transition.to,
            **_changes(event=report.event, occurred_at=occurred_at, detail=detail),
        )
        if transition is not None and moved:
            status, result = transition.to, ReceiptResult.APPLIED
        else:
            # The conditional UPDATE decided; this read only reports where the delivery is.
            status = Delivery.objects.filter(pk=delivery.pk).values_list("status", flat=True).get()
            result = ReceiptResult.RECORDED if transition is None else ReceiptResult.IGNORED_OLDER
        receipts.append(
            DeliveryReceipt(
                provider=provider,
                event_id=report.event_id,
                delivery=delivery,
                event=report.event,
                outcome=result.value,
                status_after=status,
                occurred_at=occurred_at,
                received_at=received_at,
                detail=detail,
            )
        )
        notice = delivery.notice
        entries.append(
            AuditEntry(
                actor_type="provider",
                actor_id=provider,
                action="delivery.receipt",
                object_type="delivery",
                object_id=str(delivery.id),
                region_code=notice.region.code,
                data={
                    "notice": str(notice.id),
                    "channel": delivery.channel,
                    "event": report.event,
                    "event_id": report.event_id,
                    "occurred_at": occurred_at.isoformat(),
                    "outcome": result.value,
                    "status": status,
                },
            )
        )
        if result == ReceiptResult.APPLIED and status == Delivery.Status.FAILED_PERMANENT:
            failed.append((len(recorded), delivery, f"receipt {report.event}: {detail}"[:MAX_DETAIL_LENGTH]))
        recorded.append(
            _Recorded(ReceiptOutcome(result=result, delivery_id=str(delivery.id), status=status), report.event_id)
        )
    try:
        DeliveryReceipt.objects.bulk_create(receipts)
    except IntegrityError as exc:
        # The only constraint these inserts can break is (provider, event_id):
        # another request stored one of them after we looked. Everything
        # above rolls back with this chunk.
        raise _DuplicateReceiptError from exc
    audit_record_many(entries)
    for position, delivery, reason in failed:
        delivery.status = Delivery.Status.FAILED_PERMANENT
        fallback = delivery_fallback_advance(delivery=delivery, reason=reason)
        if fallback is not None:
            item = recorded[position]
            recorded[position] = _Recorded(replace(item.outcome, fallback_delivery_id=str(fallback.id)), item.event_id)
    return recorded


def _changes(*, event: str, occurred_at: datetime, detail: str) -> dict[str, object]:
    """The columns a transition sets besides the status."""
    if event == DeliveryReceipt.Event.DELIVERED:
        return {"delivered_at": occurred_at}
    if event == DeliveryReceipt.Event.READ:
        # Read implies delivered; keep an earlier delivered_at if there is one.
        return {"read_at": occurred_at, "delivered_at": Coalesce("delivered_at", Value(occurred_at))}
    if event == DeliveryReceipt.Event.FAILED:
        return {"last_error": f"receipt failed: {detail}"[:MAX_DETAIL_LENGTH] if detail else "receipt failed"}
    return {}
