"""SMPP delivery receipts: ``deliver_sm`` PDUs turned into :class:`ReceiptReport`\\ s.

An SMSC reports the fate of a message it accepted with a ``deliver_sm``
whose ``esm_class`` has the receipt bit (0x04) set and whose text follows,
more or less, the format of SMPP v3.4's appendix B::

    id:1A2B3C sub:001 dlvrd:001 submit date:2611280900 done date:2611280901 stat:DELIVRD err:000 text:Surat…

Carriers deviate: fields in another order or case, some missing, ``DELIVERED``
for ``DELIVRD``, the id in decimal where ``submit_sm_resp`` gave it in hex (or
the other way round, or with leading zeros). So :func:`receipt_parse` reads
``key:value`` pairs wherever they are, prefers the ``receipted_message_id``
and ``message_state`` TLVs when the SMSC sends them, and offers the id's
other spellings as candidate references.

:func:`deliver_sm_answer` records a batch of them through
:func:`cakra.delivery.receipts.receipts_record` (the one way receipts are
recorded) and says what to answer each with: ``ESME_ROK``; ``ESME_RX_T_APPN``
for a receipt whose message id no delivery has yet (it arrived before the
worker recorded the hand-over: the SMSC delivers it again later); and
``ESME_RX_P_APPN`` for one that cannot be read at all (no retry helps).
It is used by the adapter's own session (:mod:`cakra.delivery.channels.smpp`)
and by the listener of ``cakra smpp-receipts`` (:mod:`cakra.delivery.smpp_listener`).

The receipt text may quote the start of the message and the handset's
number is the PDU's source address: neither is logged nor stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.utils import timezone
from smpplib import consts

from cakra.delivery.models import DeliveryReceipt
from cakra.delivery.receipts import ReceiptReport, ReceiptResult, receipts_record

logger = structlog.get_logger(__name__)

ESM_CLASS_RECEIPT = 0x04  # SMSC delivery receipt (esm_class bits 2-5)
ESM_CLASS_TYPE_MASK = 0x3C
MAX_ID_LENGTH = 64  # message_id is a C-Octet String of at most 65 octets
MAX_TEXT_LENGTH = 1024

# The standard stat words, and what each means for us (DeliveryReceipt.Event).
STAT_EVENTS = {
    "DELIVRD": DeliveryReceipt.Event.DELIVERED,
    "UNDELIV": DeliveryReceipt.Event.FAILED,
    "REJECTD": DeliveryReceipt.Event.FAILED,
    "EXPIRED": DeliveryReceipt.Event.FAILED,
    "DELETED": DeliveryReceipt.Event.FAILED,
    # Not final: the SMSC has it and is still trying.
    "ACCEPTD": DeliveryReceipt.Event.DEFERRED,
    "ENROUTE": DeliveryReceipt.Event.DEFERRED,
    "UNKNOWN": DeliveryReceipt.Event.DEFERRED,
}
# The message_state TLV's values (SMPP v3.4 section 5.2.28).
MESSAGE_STATES = {
    consts.SMPP_MESSAGE_STATE_ENROUTE: "ENROUTE",
    consts.SMPP_MESSAGE_STATE_DELIVERED: "DELIVRD",
    consts.SMPP_MESSAGE_STATE_EXPIRED: "EXPIRED",
    consts.SMPP_MESSAGE_STATE_DELETED: "DELETED",
    consts.SMPP_MESSAGE_STATE_UNDELIVERABLE: "UNDELIV",
    consts.SMPP_MESSAGE_STATE_ACCEPTED: "ACCEPTD",
    consts.SMPP_MESSAGE_STATE_UNKNOWN: "UNKNOWN",
    consts.SMPP_MESSAGE_STATE_REJECTED: "REJECTD",
}
# How carriers spell the stat words, by their first five letters.
_STAT_PREFIXES = {
    "DELIV": "DELIVRD",
    "UNDEL": "UNDELIV",
    "REJEC": "REJECTD",
    "EXPIR": "EXPIRED",
    "DELET": "DELETED",
    "ACCEP": "ACCEPTD",
    "ENROU": "ENROUTE",
    "UNKNO": "UNKNOWN",
}
# A key and its colon; the value runs to the next key. "submit date" is also
# written "submit_date" or "submitdate".
_KEY = re.compile(r"(?i)(?<![A-Za-z])(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:\s*")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
_DATE = re.compile(r"\d{10}(?:\d{2})?")
_HEX = re.compile(r"[0-9A-Fa-f]+")


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    """What a receipt says: the message (its candidate references, preferred first) and its state."""

    references: tuple[str, ...]
    stat: str
    error: str = ""
    done_at: datetime | None = None

    @property
    def event(self) -> str:
        return STAT_EVENTS[self.stat]

    @property
    def detail(self) -> str:
        if self.event == DeliveryReceipt.Event.DELIVERED:
            return ""
        return f"{self.stat} err:{self.error}" if self.error else self.stat

    def report(self, reference: str, *, received_at: datetime) -> ReceiptReport:
        return ReceiptReport(
            provider_reference=reference,
            event=self.event,
            occurred_at=self.done_at or received_at,
            event_id=f"dlr:{reference}:{self.stat}",
            detail=self.detail,
        )


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        # Receipt texts are ASCII; Latin-1 maps every byte, so nothing raises.
        return value[:MAX_TEXT_LENGTH].decode("latin-1")
    return value[:MAX_TEXT_LENGTH]


def _fields(text: str) -> dict[str, str]:
    """The receipt's ``key:value`` pairs, keys lowercased without spaces; the first of each key wins."""
    found: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    for index, match in enumerate(matches):
        key = re.sub(r"[ _]", "", match.group(1).lower())
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        found.setdefault(key, text[match.end() : end].strip())
    return found


def stat_normalise(raw: str) -> str:
    """The standard stat word for a carrier's spelling of it, or "" when it is none."""
    word = raw.strip().upper()
    if word in STAT_EVENTS:
        return word
    return _STAT_PREFIXES.get(word[:5], "")


def reference_candidates(raw: str) -> tuple[str, ...]:
    """The id as written first, then its other spellings: without leading zeros,
    a decimal id in hex (both cases), a hex id in decimal."""
    candidates = [raw]
    stripped = raw.lstrip("0") or "0"
    candidates.append(stripped)
    if raw.isdigit() and len(raw) <= 20:  # noqa: PLR2004 - a 64-bit number's digits
        number = int(raw)
        candidates += [f"{number:X}", f"{number:x}"]
    if _HEX.fullmatch(raw) and len(raw) <= 16:  # noqa: PLR2004 - a 64-bit number's hex digits
        candidates.append(str(int(raw, 16)))
    unique: list[str] = []
    for candidate in candidates:
        if candidate and candidate not in unique and len(candidate) <= MAX_ID_LENGTH:
            unique.append(candidate)
    return tuple(unique)


def _done_at(raw: str) -> datetime | None:
    """``YYMMDDhhmm[ss]`` in the SMSC's local time, taken as the project's time zone."""
    match = _DATE.match(raw)
    if match is None:
        return None
    digits = match.group(0)
    try:
        naive = datetime.strptime(digits, "%y%m%d%H%M%S" if len(digits) == 12 else "%y%m%d%H%M")  # noqa: DTZ007, PLR2004 - made aware below
    except ValueError:
        return None
    return timezone.make_aware(naive, timezone.get_default_timezone())


def receipt_parse(
    text: bytes | str | None,
    *,
    receipted_message_id: bytes | str | None = None,
    message_state: int | None = None,
) -> ParsedReceipt | None:
    """The receipt in ``text`` (and the TLVs, preferred when present), or None
    when it names no message or no state we know."""
    fields = _fields(_text(text))
    tlv_id = _text(receipted_message_id).strip("\x00 ")
    text_id = _TOKEN.match(fields.get("id", ""))
    raw_id = tlv_id or (text_id.group(0) if text_id else "")
    if not raw_id or len(raw_id) > MAX_ID_LENGTH or not _TOKEN.fullmatch(raw_id):
        return None
    stat = MESSAGE_STATES.get(message_state, "") if message_state is not None else ""
    if not stat:
        word = _TOKEN.match(fields.get("stat", ""))
        stat = stat_normalise(word.group(0)) if word else ""
    if not stat:
        return None
    error = _TOKEN.match(fields.get("err", ""))
    return ParsedReceipt(
        references=reference_candidates(raw_id),
        stat=stat,
        error=error.group(0)[:10] if error else "",
        done_at=_done_at(fields.get("donedate", "")),
    )


def is_receipt(pdu: Any) -> bool:
    """Whether a ``deliver_sm`` is a delivery receipt (not a citizen's SMS to the sender ID)."""
    esm_class = int(getattr(pdu, "esm_class", 0) or 0)
    return esm_class & ESM_CLASS_TYPE_MASK == ESM_CLASS_RECEIPT


def deliver_sm_parse(pdu: Any) -> ParsedReceipt | None:
    """The receipt a ``deliver_sm`` carries (smpplib's parsed PDU), or None."""
    if not is_receipt(pdu):
        return None
    text = getattr(pdu, "short_message", None) or getattr(pdu, "message_payload", None)
    state = getattr(pdu, "message_state", None)
    return receipt_parse(
        text,
        receipted_message_id=getattr(pdu, "receipted_message_id", None),
        message_state=int(state) if isinstance(state, int) else None,
    )


def _split(*, provider: str, pdus: Sequence[Any], statuses: list[int]) -> list[tuple[int, ParsedReceipt]]:
    """The receipts among ``pdus`` with their positions; unreadable ones get ``ESME_RX_P_APPN``."""
    parsed: list[tuple[int, ParsedReceipt]] = []
    not_receipts = unreadable = 0
    for position, pdu in enumerate(pdus):
        if not is_receipt(pdu):
            not_receipts += 1  # a citizen's SMS to the sender ID: nothing to record here
            continue
        receipt = deliver_sm_parse(pdu)
        if receipt is None:
            unreadable += 1
            statuses[position] = consts.SMPP_ESME_RX_P_APPN
            continue
        parsed.append((position, receipt))
    if not_receipts or unreadable:
        logger.info("smpp.deliver_sm_skipped", provider=provider, not_receipts=not_receipts, unreadable=unreadable)
    return parsed


def _known_under_another_spelling(*, provider: str, receipt: ParsedReceipt, received_at: datetime) -> bool:
    for alternative in receipt.references[1:]:
        [outcome] = receipts_record(provider=provider, reports=[receipt.report(alternative, received_at=received_at)])
        if outcome.result != ReceiptResult.UNKNOWN_REFERENCE:
            return True
    return False


def deliver_sm_answer(*, provider: str, pdus: Sequence[Any]) -> list[int]:
    """Record the receipts among ``pdus`` (``deliver_sm``\\ s of ``provider``'s
    session); the ``command_status`` to answer each with, in order.

    One :func:`receipts_record` call for the batch; a receipt whose id is
    unknown is tried again under its other spellings (rare: only a carrier
    that rewrites ids, or the race the SMSC's redelivery resolves). Opens its
    own transactions: call it with no transaction open and before answering.
    """
    statuses = [consts.SMPP_ESME_ROK] * len(pdus)
    parsed = _split(provider=provider, pdus=pdus, statuses=statuses)
    if not parsed:
        return statuses
    received_at = timezone.now()
    try:
        outcomes = receipts_record(
            provider=provider,
            reports=[receipt.report(receipt.references[0], received_at=received_at) for _, receipt in parsed],
        )
        for (position, receipt), outcome in zip(parsed, outcomes, strict=True):
            if outcome.result == ReceiptResult.UNKNOWN_REFERENCE and not _known_under_another_spelling(
                provider=provider, receipt=receipt, received_at=received_at
            ):
                statuses[position] = consts.SMPP_ESME_RX_T_APPN
    except Exception as exc:  # noqa: BLE001 - the database is away: the SMSC keeps the receipts and retries
        logger.warning("smpp.receipts_not_recorded", provider=provider, receipts=len(parsed), error=type(exc).__name__)
        for position, _ in parsed:
            statuses[position] = consts.SMPP_ESME_RX_T_APPN
    return statuses
