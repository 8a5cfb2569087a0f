"""What the SMSC simulator was handed: each text, reassembled, as the handset shows it.

A long text arrives as several ``submit_sm``, each with its own
``message_id`` and a UDH concatenation header (reference, total, number);
the store keeps the parts until all have come and then shows one message,
as a phone does. Copies are counted per (recipient, text): SMPP carries no
idempotency key, so the same text reaching the same number twice is the
only trace a duplicate send leaves (``/_sim/received.json``).

Memory is bounded: the newest ``MAX_MESSAGES`` texts are kept for the pages
(the copy counts, a digest per text, are kept for the run).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from smpplib import consts
from smpplib.gsm import GSM_CHARACTER_TABLE

MAX_MESSAGES = 20_000
MAX_PENDING_TEXTS = 10_000  # concatenated texts waiting for a missing part
GSM_ESCAPE = 0x1B
IEI_CONCATENATED_8BIT = 0x00
IEI_CONCATENATED_16BIT = 0x08


def gsm_decode(data: bytes) -> str:
    """GSM 03.38 default alphabet, one septet per octet (SMPP's unpacked form)."""
    characters: list[str] = []
    escaped = False
    for octet in data:
        if escaped:
            index = octet + 0x80
            characters.append(GSM_CHARACTER_TABLE[index] if index < len(GSM_CHARACTER_TABLE) else "?")
            escaped = False
        elif octet == GSM_ESCAPE:
            escaped = True
        elif octet < 0x80:  # noqa: PLR2004 - seven bits
            characters.append(GSM_CHARACTER_TABLE[octet])
        else:
            characters.append("?")
    return "".join(characters)


def text_decode(data: bytes, data_coding: int) -> str:
    if data_coding == consts.SMPP_ENCODING_DEFAULT:
        return gsm_decode(data)
    if data_coding == consts.SMPP_ENCODING_ISO10646:
        return data.decode("utf-16-be", "replace")
    return data.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Concatenation:
    reference: int
    total: int
    number: int


def udh_split(short_message: bytes) -> tuple[Concatenation | None, bytes]:
    """The concatenation element of a user data header, and the text after the header."""
    if not short_message:
        return None, b""
    length = short_message[0]
    header, body = short_message[1 : 1 + length], short_message[1 + length :]
    found: Concatenation | None = None
    position = 0
    while position + 2 <= len(header):
        iei, size = header[position], header[position + 1]
        value = header[position + 2 : position + 2 + size]
        if iei == IEI_CONCATENATED_8BIT and size == 3 and len(value) == 3:  # noqa: PLR2004 - its length
            found = Concatenation(reference=value[0], total=value[1], number=value[2])
        elif iei == IEI_CONCATENATED_16BIT and size == 4 and len(value) == 4:  # noqa: PLR2004 - its length
            found = Concatenation(reference=value[0] << 8 | value[1], total=value[2], number=value[3])
        position += 2 + size
    if found is not None and not 1 <= found.number <= found.total:
        found = None
    return found, body


def copy_key(recipient: str, text: str) -> str:
    return f"{recipient}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass(slots=True)
class SmsMessage:
    """One text as the phone shows it (its parts reassembled)."""

    id: str  # the first part's message_id
    system_id: str
    sender: str
    recipient: str  # digits, as submitted (E.164 without "+")
    text: str
    parts: int
    submitted_at: datetime
    status: str = "accepted"  # then the receipt's stat: DELIVRD, UNDELIV…; "no receipt" when none comes
    part_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "system_id": self.system_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "text": self.text,
            "parts": self.parts,
            "part_ids": list(self.part_ids),
            "submitted_at": self.submitted_at.isoformat(),
            "status": self.status,
        }


@dataclass(slots=True)
class _Pending:
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # number -> (message_id, body)


class SmscStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: deque[SmsMessage] = deque(maxlen=MAX_MESSAGES)
        self._by_part: dict[str, SmsMessage] = {}
        self._pending: OrderedDict[tuple[Any, ...], _Pending] = OrderedDict()
        self._copies: Counter[str] = Counter()
        # Receipts for a first part whose text is still missing parts.
        self._early_status: OrderedDict[str, str] = OrderedDict()
        self.parts_received = 0

    def part_add(
        self,
        *,
        message_id: str,
        system_id: str,
        sender: str,
        recipient: str,
        esm_class: int,
        data_coding: int,
        short_message: bytes,
    ) -> SmsMessage | None:
        """Keep one accepted ``submit_sm``; the whole message once its last part is in, else None."""
        concatenation: Concatenation | None = None
        body = short_message
        if esm_class & consts.SMPP_GSMFEAT_UDHI:
            concatenation, body = udh_split(short_message)
        with self._lock:
            self.parts_received += 1
            if concatenation is None or concatenation.total == 1:
                return self._complete(
                    ids=[message_id],
                    system_id=system_id,
                    sender=sender,
                    recipient=recipient,
                    text=text_decode(body, data_coding),
                )
            key = (system_id, sender, recipient, concatenation.reference, concatenation.total, data_coding)
            pending = self._pending.setdefault(key, _Pending())
            pending.parts.setdefault(concatenation.number, (message_id, body))
            if len(pending.parts) < concatenation.total:
                while len(self._pending) > MAX_PENDING_TEXTS:
                    self._pending.popitem(last=False)
                return None
            del self._pending[key]
            ordered = [pending.parts[number] for number in sorted(pending.parts)]
            return self._complete(
                ids=[part_id for part_id, _ in ordered],
                system_id=system_id,
                sender=sender,
                recipient=recipient,
                text=text_decode(b"".join(part for _, part in ordered), data_coding),
            )

    def _complete(self, *, ids: list[str], system_id: str, sender: str, recipient: str, text: str) -> SmsMessage:
        message = SmsMessage(
            id=ids[0],
            system_id=system_id,
            sender=sender,
            recipient=recipient,
            text=text,
            parts=len(ids),
            submitted_at=timezone.now(),
            part_ids=ids,
        )
        if len(self._messages) == self._messages.maxlen:
            for part_id in self._messages[0].part_ids:
                self._by_part.pop(part_id, None)
        message.status = self._early_status.pop(ids[0], message.status)
        self._messages.append(message)
        for part_id in ids:
            self._by_part[part_id] = message
        self._copies[copy_key(recipient, text)] += 1
        return message

    def status_set(self, message_id: str, status: str) -> None:
        """Record a receipt's outcome on the message one of whose parts is ``message_id``."""
        with self._lock:
            message = self._by_part.get(message_id)
            if message is None:
                self._early_status[message_id] = status
                while len(self._early_status) > MAX_PENDING_TEXTS:
                    self._early_status.popitem(last=False)
            elif message.id == message_id:
                message.status = status

    def messages(self, *, limit: int | None = None, recipient: str | None = None) -> list[SmsMessage]:
        """Newest first."""
        with self._lock:
            chosen = [m for m in reversed(self._messages) if recipient is None or m.recipient == recipient]
        return chosen[:limit]

    def recipients(self) -> list[tuple[str, int, SmsMessage]]:
        """Each recipient with its number of texts and its latest, latest first."""
        with self._lock:
            latest: dict[str, SmsMessage] = {}
            counts: Counter[str] = Counter()
            for message in self._messages:
                latest[message.recipient] = message
                counts[message.recipient] += 1
        ordered = sorted(latest.items(), key=lambda item: item[1].submitted_at, reverse=True)
        return [(recipient, counts[recipient], message) for recipient, message in ordered]

    def count(self) -> int:
        with self._lock:
            return sum(self._copies.values())

    def received(self) -> dict[str, int]:
        """Copies per (recipient, text digest): more than one is a duplicate send."""
        with self._lock:
            return dict(self._copies)
