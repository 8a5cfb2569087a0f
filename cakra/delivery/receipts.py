"""Receipts: what providers report about deliveries after accepting them.

One entry point, :func:`receipts_record` (a provider's batch; a single
receipt is a batch of one), for every channel's receipts (email event webhooks, WhatsApp status webhooks, SMPP
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
one transaction. A batch is recorded in chunks, each one transaction of a
constant number of statements, whatever its size: one conditional UPDATE
per event type (``RETURNING`` the deliveries that moved), one read of where
the others are, one insert of the receipts, one audit append; if a
concurrent request stored one of the chunk's event ids after we looked, the
chunk rolls back whole and is recorded again receipt by receipt.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import structlog
from django.db import IntegrityError, connections, router, transaction
from django.db.models import CharField, Model
from django.db.models.expressions import RawSQL
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_events_record
from cakra.db import rows_insert
from cakra.delivery.fallback import delivery_fallback_advance
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.delivery.states import (
    RECEIPT_TRANSITIONS,
    ReceiptTransition,
    delivery_transition_many,
    receipt_transition,
)

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
    if not text:  # most receipts (every "delivered") carry none: skip the three scans
        return ""
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
# the chain head's lock, held until commit, is released often. Each chunk
# pays a fixed cost (building its queries, the audit head's compare-and-set,
# the commit), so chunks must not be small; larger ones lock more rows at a
# time and leave more receipts to record one by one after a duplicate race
# (docs/performance.md: how the size was chosen).
BATCH_CHUNK = 250


def receipts_record(*, provider: str, reports: list[ReceiptReport]) -> list[ReceiptOutcome]:
    """Record a provider's batch of receipts; one outcome per report, in order.

    Inside a caller's transaction each chunk is a savepoint, so a duplicate
    never undoes its neighbours or the caller's work.
    """
    for report in reports:
        if report.event not in _EVENTS:
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
            recorded = [_record_alone(provider=provider, report=report) for report in chunk]
        # Logged once the chunk is recorded: a rolled-back chunk leaves no
        # line about what did not happen.
        for report, outcome in zip(chunk, recorded, strict=True):
            if outcome.result == ReceiptResult.UNKNOWN_REFERENCE:
                logger.info("delivery.receipt_unknown_reference", provider=provider, event_id=report.event_id)
            elif outcome.status == Delivery.Status.FAILED_PERMANENT and outcome.result == ReceiptResult.APPLIED:
                logger.info(
                    "delivery.receipt_failed",
                    provider=provider,
                    event_id=report.event_id,
                    delivery_id=outcome.delivery_id,
                    fallback_delivery_id=outcome.fallback_delivery_id,
                )
        outcomes.extend(recorded)
    return outcomes


# Checked once per report: ``Event.values`` builds a new list on every access.
_EVENTS = frozenset(DeliveryReceipt.Event.values)
# Outcomes that carry nothing but their result (the dataclass is frozen: shared).
_DUPLICATE = ReceiptOutcome(result=ReceiptResult.DUPLICATE)
_UNKNOWN_REFERENCE = ReceiptOutcome(result=ReceiptResult.UNKNOWN_REFERENCE)


def _record_alone(*, provider: str, report: ReceiptReport) -> ReceiptOutcome:
    try:
        return _record_chunk(provider=provider, reports=[report])[0]
    except _DuplicateReceiptError:
        return _DUPLICATE


class _Target(NamedTuple):
    """The few columns of a delivery a receipt needs (no model instances: a chunk reads a hundred)."""

    pk: Any
    channel: str
    notice_id: Any
    region_code: str


@dataclass(slots=True)
class _Applying:
    """A new report about a known delivery, and what applying it did."""

    report: ReceiptReport
    delivery: _Target
    detail: str
    occurred_at: datetime
    transition: ReceiptTransition | None
    result: ReceiptResult = ReceiptResult.IGNORED_OLDER
    status: str = ""


# The chunk's lookups (deliveries by reference, receipts by event id) send
# their values as one JSON array parameter that the database expands, not as
# ``IN (%s, %s, …)``: psycopg splits a query at its placeholders in Python
# and Django prepares every value of an IN list, a cost per value that a
# single parameter does not have. Any other backend gets the plain list.
_JSON_ARRAY_ELEMENTS = {
    "postgresql": "SELECT json_array_elements_text(%s::json)",
    "sqlite": "SELECT value FROM json_each(%s)",
}


def _one_of(values: Collection[str], *, model: type[Model]) -> RawSQL | list[str]:
    """The right side of an ``__in`` lookup on a text column of ``model``, matching any of ``values``."""
    expand = _JSON_ARRAY_ELEMENTS.get(connections[router.db_for_read(model)].vendor)
    if expand is None:
        return list(values)
    return RawSQL(expand, [json.dumps(list(values))], output_field=CharField())  # noqa: S611 - a constant fragment; the values are its one parameter


# Receipts are built with positional arguments, in the model's field order:
# Django's constructor takes that path in about half the time of keywords.
# tests/delivery/test_receipts.py holds this order to the model's.
RECEIPT_FIELDS = (
    "id",
    "provider",
    "event_id",
    "delivery_id",
    "event",
    "outcome",
    "status_after",
    "occurred_at",
    "received_at",
    "detail",
)
# Called through a plain callable: django-stubs checks positional model
# arguments against an order of its own, not the model's field order.
_new_receipt: Callable[..., DeliveryReceipt] = DeliveryReceipt


@transaction.atomic
def _record_chunk(*, provider: str, reports: list[ReceiptReport]) -> list[ReceiptOutcome]:
    deliveries = {
        reference: _Target(pk, channel, notice_id, region_code)
        for pk, reference, channel, notice_id, region_code in Delivery.objects.filter(
            provider=provider,
            provider_reference__in=_one_of({report.provider_reference for report in reports}, model=Delivery),
        ).values_list("pk", "provider_reference", "channel", "notice_id", "notice__region__code")
    }
    seen = set(
        DeliveryReceipt.objects.filter(
            provider=provider, event_id__in=_one_of({report.event_id for report in reports}, model=DeliveryReceipt)
        ).values_list("event_id", flat=True)
    )
    received_at = timezone.now()
    recorded: list[ReceiptOutcome] = []
    applying: list[tuple[int, _Applying]] = []  # (position in recorded, the report being applied)
    for report in reports:
        if report.event_id in seen:
            recorded.append(_DUPLICATE)
            continue
        delivery = deliveries.get(report.provider_reference)
        if delivery is None:
            recorded.append(_UNKNOWN_REFERENCE)
            continue
        seen.add(report.event_id)
        item = _Applying(
            report=report,
            delivery=delivery,
            detail=receipt_detail_clean(report.detail),
            # A provider's clock ahead of ours must not date a delivery in the future.
            occurred_at=min(report.occurred_at, received_at),
            transition=receipt_transition(report.event),
        )
        applying.append((len(recorded), item))
        recorded.append(_DUPLICATE)  # holds its place: replaced below, once applied
    _apply([item for _, item in applying])
    receipts: list[DeliveryReceipt] = []
    entries: list[AuditEntry] = []
    failed: list[tuple[int, Any, str]] = []
    for position, item in applying:
        delivery, report, result, status = item.delivery, item.report, item.result.value, item.status
        delivery_id = str(delivery.pk)
        receipts.append(
            _new_receipt(  # in RECEIPT_FIELDS order; id None: the database numbers it
                None,
                provider,
                report.event_id,
                delivery.pk,
                report.event,
                result,
                status,
                item.occurred_at,
                received_at,
                item.detail,
            )
        )
        entries.append(
            AuditEntry(
                actor_type="provider",
                actor_id=provider,
                action="delivery.receipt",
                object_type="delivery",
                object_id=delivery_id,
                region_code=delivery.region_code,
                data={
                    "notice": str(delivery.notice_id),
                    "channel": delivery.channel,
                    "event": report.event,
                    "event_id": report.event_id,
                    "occurred_at": item.occurred_at.isoformat(),
                    "outcome": result,
                    "status": status,
                },
            )
        )
        if item.result == ReceiptResult.APPLIED and status == Delivery.Status.FAILED_PERMANENT:
            failed.append((position, delivery.pk, f"receipt {report.event}: {item.detail}"[:MAX_DETAIL_LENGTH]))
        recorded[position] = ReceiptOutcome(result=item.result, delivery_id=delivery_id, status=status)
    try:
        # One statement (one JSON document on PostgreSQL); a duplicate
        # (provider, event_id) raises IntegrityError either way.
        rows_insert(receipts)
    except IntegrityError as exc:
        # The only constraint these inserts can break is (provider, event_id):
        # another request stored one of them after we looked. Everything
        # above rolls back with this chunk.
        raise _DuplicateReceiptError from exc
    audit_events_record(entries)
    if failed:  # bounces are few: only they need the whole delivery, for fallback
        bounced = Delivery.objects.select_related("notice__region").in_bulk([pk for _, pk, _ in failed])
        for position, pk, reason in failed:
            fallback = delivery_fallback_advance(delivery=bounced[pk], reason=reason)
            if fallback is not None:
                recorded[position] = replace(recorded[position], fallback_delivery_id=str(fallback.id))
    return recorded


def _apply(items: list[_Applying]) -> None:
    """Apply the reports to their deliveries, setting each one's result and status after.

    One conditional UPDATE per event type (``RETURNING`` the deliveries that
    moved: the UPDATE decides, never a read before it), then one read of
    where the others are. A delivery reported on more than once in the chunk
    (delivered, then opened) must end as if the reports had come one after
    the other, so the reports go in rounds: round *n* holds each delivery's
    *n*-th report, and the rounds apply in order. Usually there is one.
    """
    rounds: list[list[_Applying]] = []
    depth: Counter[Any] = Counter()
    for item in items:
        turn = depth[item.delivery.pk]
        depth[item.delivery.pk] += 1
        if turn == len(rounds):
            rounds.append([])
        rounds[turn].append(item)
    # Deliveries this transaction moved: their rows stay locked until it
    # commits, so their status is the one we set.
    held: dict[Any, str] = {}
    for turn_items in rounds:
        by_event: dict[str, list[_Applying]] = defaultdict(list)
        for item in turn_items:
            if item.transition is not None:
                by_event[item.report.event].append(item)
        moved: set[Any] = set()
        for event, group in by_event.items():
            transition = RECEIPT_TRANSITIONS[event]
            moved |= delivery_transition_many(
                from_states=transition.from_states,
                to=transition.to,
                changes={item.delivery.pk: _changes(event=event, item=item) for item in group},
                keep_existing=_KEEP_EXISTING.get(event, ()),
            )
        # The conditional UPDATEs decided; this read only reports where the other deliveries are.
        known = moved | set(held)
        unread = {item.delivery.pk for item in turn_items if item.delivery.pk not in known}
        current = dict(Delivery.objects.filter(pk__in=unread).values_list("pk", "status")) if unread else {}
        for item in turn_items:
            key = item.delivery.pk
            if key in moved and item.transition is not None:
                item.result, item.status = ReceiptResult.APPLIED, item.transition.to
                held[key] = item.status
            else:
                item.result = ReceiptResult.RECORDED if item.transition is None else ReceiptResult.IGNORED_OLDER
                item.status = held[key] if key in held else current[key]


# Read implies delivered: a read receipt sets delivered_at too, unless an
# earlier delivered receipt already did.
_KEEP_EXISTING: dict[str, frozenset[str]] = {DeliveryReceipt.Event.READ: frozenset({"delivered_at"})}


def _changes(*, event: str, item: _Applying) -> dict[str, object]:
    """The columns a transition sets besides the status."""
    if event == DeliveryReceipt.Event.DELIVERED:
        return {"delivered_at": item.occurred_at}
    if event == DeliveryReceipt.Event.READ:
        return {"read_at": item.occurred_at, "delivered_at": item.occurred_at}
    if event == DeliveryReceipt.Event.FAILED:
        detail = item.detail
        return {"last_error": f"receipt failed: {detail}"[:MAX_DETAIL_LENGTH] if detail else "receipt failed"}
    return {}
