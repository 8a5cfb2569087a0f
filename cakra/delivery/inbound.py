"""Messages citizens send to an official WhatsApp number, and the automatic answer.

:func:`inbound_messages_record` stores each message once (Meta redelivers a
webhook until it is answered 200) and decides, in the same transaction,
whether it gets an answer; the answer is published after the commit and
sent by :func:`inbound_reply_send` in a worker, through the provider's
adapter, as free-form text: allowed because the citizen's message has just
opened the 24-hour customer window.

At most one answer per sender per ``CAKRA_WHATSAPP_AUTO_REPLY["MIN_INTERVAL_SECONDS"]``:
a citizen who writes three lines gets one answer, and another bot that
answers our answer cannot start a loop. The sender's number is stored
encrypted (opened only to send the answer) with a keyed hash beside it;
logs carry ids, kinds and counts, never the number or the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from cakra.delivery.auto_reply import auto_reply_language, auto_reply_text
from cakra.delivery.channels.base import (
    MAX_DETAIL_LENGTH,
    OutboundMessage,
    SenderIdentity,
    ThrottledProviderError,
)
from cakra.delivery.channels.registry import adapter_for_provider
from cakra.delivery.dispatch import inbound_replies_enqueue_on_commit
from cakra.delivery.models import Channel, InboundMessage
from cakra.enforcement.models import Region
from cakra.security.crypto import inbound_sender_hash

logger = structlog.get_logger(__name__)

# The reference an automatic answer travels with (the Cloud API echoes it as
# biz_opaque_callback_data in the answer's statuses): it says at once that a
# status is about an answer, not about a notice's delivery.
AUTO_REPLY_REFERENCE_PREFIX = "reply:"

Status = InboundMessage.ReplyStatus

# Meta's customer service window; an answer is sent only well inside it.
CUSTOMER_WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=5)
DEFAULT_MIN_INTERVAL_SECONDS = 30 * 60
_KINDS = frozenset(InboundMessage.Kind.values)


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundReport:
    """One inbound message as the provider reported it, already checked for shape."""

    provider_message_id: str
    sender: str = field(repr=False)  # E.164 with "+"
    business_phone_number_id: str
    kind: str
    text: str = field(default="", repr=False)
    received_at: datetime


class InboundResult(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"


def _min_interval() -> timedelta:
    config = getattr(settings, "CAKRA_WHATSAPP_AUTO_REPLY", {})
    return timedelta(seconds=float(config.get("MIN_INTERVAL_SECONDS", DEFAULT_MIN_INTERVAL_SECONDS)))


def _in_window(received_at: datetime, now: datetime) -> bool:
    return now - received_at < CUSTOMER_WINDOW - WINDOW_MARGIN


def _reply_status(*, report: InboundReport, sender_hash: str, region_code: str, now: datetime) -> str:
    if not region_code:
        return Status.NOT_OURS
    if not _in_window(report.received_at, now):
        return Status.EXPIRED
    answered_lately = InboundMessage.objects.filter(
        sender_hash=sender_hash,
        reply_status__in=(Status.PENDING, Status.SENDING, Status.SENT),
        recorded_at__gte=now - _min_interval(),
    ).exists()
    return Status.SUPPRESSED if answered_lately else Status.PENDING


@transaction.atomic
def inbound_messages_record(
    *, provider: str, reports: Sequence[InboundReport], channel: str = Channel.WHATSAPP
) -> list[InboundResult]:
    """Store each new message once and queue the answers it deserves; one result per report."""
    if not reports:
        return []
    now = timezone.now()
    numbers = {report.business_phone_number_id for report in reports}
    regions = dict(
        Region.objects.filter(whatsapp_phone_number_id__in=numbers).values_list("whatsapp_phone_number_id", "code")
    )
    seen = set(
        InboundMessage.objects.filter(
            provider=provider, provider_message_id__in=[report.provider_message_id for report in reports]
        ).values_list("provider_message_id", flat=True)
    )
    results: list[InboundResult] = []
    to_answer: list[str] = []
    for report in reports:
        if report.provider_message_id in seen:
            results.append(InboundResult.DUPLICATE)
            continue
        seen.add(report.provider_message_id)
        sender_hash = inbound_sender_hash(report.sender)
        region_code = regions.get(report.business_phone_number_id, "")
        row = InboundMessage(
            channel=channel,
            provider=provider,
            provider_message_id=report.provider_message_id,
            sender_hash=sender_hash,
            sender=report.sender,
            business_phone_number_id=report.business_phone_number_id,
            region_code=region_code,
            kind=report.kind if report.kind in _KINDS else InboundMessage.Kind.OTHER,
            text=report.text,
            language=auto_reply_language(report.text),
            # A provider's clock ahead of ours must not date a message in the future.
            received_at=min(report.received_at, now),
            reply_status=_reply_status(report=report, sender_hash=sender_hash, region_code=region_code, now=now),
        )
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            # Another request stored the same message after we looked.
            results.append(InboundResult.DUPLICATE)
            continue
        results.append(InboundResult.RECORDED)
        logger.info(
            "whatsapp.inbound_recorded",
            inbound_id=str(row.id),
            provider=provider,
            region=region_code,
            kind=row.kind,
            language=row.language,
            reply_status=row.reply_status,
        )
        if row.reply_status == Status.PENDING:
            to_answer.append(str(row.id))
    inbound_replies_enqueue_on_commit(inbound_ids=to_answer, queue=channel)
    return results


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    status: str  # the row's reply_status after this try ("" when another try owns it)
    retry: bool = False
    retry_after: float | None = None


def _finish(inbound_id: str, status: str, **changes: object) -> ReplyOutcome:
    InboundMessage.objects.filter(pk=inbound_id, reply_status=Status.SENDING).update(reply_status=status, **changes)
    return ReplyOutcome(status=status)


def inbound_reply_send(*, inbound_id: str, final: bool = False) -> ReplyOutcome:
    """Send the automatic answer to one inbound message, at most once.

    The row is claimed (pending → sending) by a conditional UPDATE, so a
    redelivered task finds it taken and sends nothing. A retryable failure
    puts it back to pending for the task's retry, unless ``final``.
    """
    if not InboundMessage.objects.filter(pk=inbound_id, reply_status=Status.PENDING).update(
        reply_status=Status.SENDING
    ):
        return ReplyOutcome(status="")
    row = InboundMessage.objects.get(pk=inbound_id)
    if not _in_window(row.received_at, timezone.now()):
        return _finish(inbound_id, Status.EXPIRED)
    region = Region.objects.filter(code=row.region_code).only("name", "whatsapp_display_name").first()
    if region is None:
        return _finish(inbound_id, Status.NOT_OURS)
    display_name = region.whatsapp_display_name or region.name
    message = OutboundMessage(
        reference=f"{AUTO_REPLY_REFERENCE_PREFIX}{row.id}",
        recipient=row.sender,  # opened here, for this send only
        sender=SenderIdentity(address=row.business_phone_number_id, display_name=display_name),
        text=auto_reply_text(language=row.language, region_name=display_name),
        template=None,
    )
    [result] = adapter_for_provider(row.provider).send_many([message])
    if result.error is None:
        logger.info("whatsapp.auto_reply_sent", inbound_id=inbound_id, provider=row.provider)
        return _finish(inbound_id, Status.SENT, replied_at=timezone.now(), reply_reference=result.reference)
    error = result.error
    if error.outcome == "permanent" or final:
        return _finish(inbound_id, Status.FAILED, reply_error=error.detail[:MAX_DETAIL_LENGTH])
    InboundMessage.objects.filter(pk=inbound_id, reply_status=Status.SENDING).update(
        reply_status=Status.PENDING, reply_error=error.detail[:MAX_DETAIL_LENGTH]
    )
    retry_after = error.retry_after if isinstance(error, ThrottledProviderError) else None
    return ReplyOutcome(status=Status.PENDING, retry=True, retry_after=retry_after)
