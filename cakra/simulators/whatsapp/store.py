"""What the simulator keeps: recent messages, each recipient's conversation,
the customer-service windows, and how many copies of each send arrived.

Held in memory and bounded (a benchmark sends a hundred thousand messages):
the newest ``max_messages`` messages and the newest conversations stay for
the web pages; the copies counter keeps one integer per client reference
(``biz_opaque_callback_data``) for the whole run, which is what measuring
duplicates needs.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from cakra import clock

WINDOW_SECONDS = 24 * 3600
MAX_MESSAGES_DEFAULT = 10_000
CONVERSATION_MAX_ENTRIES = 100


@dataclass(slots=True)
class OutboundMessage:
    """A message the business sent (accepted by the API)."""

    wamid: str
    phone_number_id: str
    wa_id: str
    kind: str  # "template" | "text"
    text: str  # what the citizen sees
    sent_at: float
    template_name: str = ""
    template_language: str = ""
    category: str = ""
    reference: str = ""  # biz_opaque_callback_data
    statuses: list[tuple[str, float]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_status(self) -> str:
        """The furthest status reported so far (statuses may be reported out of order)."""
        reported = {status for status, _ in self.statuses}
        for status in ("failed", "read", "delivered", "sent"):
            if status in reported:
                return status
        return "accepted"

    def as_json(self) -> dict[str, Any]:
        return {
            "wamid": self.wamid,
            "to": self.wa_id,
            "phone_number_id": self.phone_number_id,
            "type": self.kind,
            "template": {"name": self.template_name, "language": self.template_language}
            if self.kind == "template"
            else None,
            "text": self.text,
            "biz_opaque_callback_data": self.reference,
            "timestamp": int(self.sent_at),
            "statuses": [{"status": status, "timestamp": int(moment)} for status, moment in self.statuses],
            "errors": list(self.errors),
        }


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message the citizen sent to a business number."""

    wamid: str
    phone_number_id: str
    wa_id: str
    name: str
    text: str
    forwarded: bool
    received_at: float


Entry = OutboundMessage | InboundMessage


class SimulatorStore:
    """Thread-safe: written by the API's request threads and the webhook thread, read by the pages."""

    def __init__(self, *, max_messages: int = MAX_MESSAGES_DEFAULT) -> None:
        self._max_messages = max_messages
        self._lock = threading.Lock()
        self._messages: OrderedDict[str, OutboundMessage] = OrderedDict()
        self._conversations: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._windows: dict[tuple[str, str], float] = {}  # (phone_number_id, wa_id) -> last inbound
        self._received: Counter[str] = Counter()
        self.accepted = 0

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._conversations.clear()
            self._windows.clear()
            self._received.clear()
            self.accepted = 0

    # --- writes ----------------------------------------------------------------
    def outbound_add(self, message: OutboundMessage) -> None:
        with self._lock:
            self.accepted += 1
            if message.reference:
                self._received[message.reference] += 1
            self._messages[message.wamid] = message
            while len(self._messages) > self._max_messages:
                self._messages.popitem(last=False)
            self._conversation(message.wa_id).append(message)

    def inbound_add(self, message: InboundMessage) -> None:
        with self._lock:
            self._windows[(message.phone_number_id, message.wa_id)] = message.received_at
            self._conversation(message.wa_id).append(message)

    def status_record(self, wamid: str, status: str, moment: float, errors: list[dict[str, Any]]) -> None:
        with self._lock:
            message = self._messages.get(wamid)
            if message is not None:
                message.statuses.append((status, moment))
                message.errors.extend(errors)

    def _conversation(self, wa_id: str) -> deque[Entry]:
        conversation = self._conversations.get(wa_id)
        if conversation is None:
            conversation = self._conversations[wa_id] = deque(maxlen=CONVERSATION_MAX_ENTRIES)
            while len(self._conversations) > self._max_messages:
                self._conversations.popitem(last=False)
        else:
            self._conversations.move_to_end(wa_id)
        return conversation

    # --- reads -------------------------------------------------------------------
    def window_open(self, phone_number_id: str, wa_id: str) -> bool:
        """Whether the citizen wrote to this business number in the last 24 hours."""
        with self._lock:
            opened = self._windows.get((phone_number_id, wa_id))
        return opened is not None and clock.time() - opened < WINDOW_SECONDS

    def received(self) -> dict[str, int]:
        """Copies accepted per client reference (``biz_opaque_callback_data``)."""
        with self._lock:
            return dict(self._received)

    def messages(self, *, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` outbound messages, newest first, as JSON."""
        with self._lock:
            newest = list(reversed(self._messages.values()))[:limit]
            return [message.as_json() for message in newest]

    def recipients(self, *, limit: int) -> list[tuple[str, int, float]]:
        """(wa_id, entries kept, last activity), most recent conversation first."""
        with self._lock:
            rows = []
            for wa_id in reversed(self._conversations):
                entries = self._conversations[wa_id]
                last = entries[-1]
                moment = last.sent_at if isinstance(last, OutboundMessage) else last.received_at
                rows.append((wa_id, len(entries), moment))
                if len(rows) >= limit:
                    break
            return rows

    def conversation(self, wa_id: str) -> list[tuple[Entry, str, list[dict[str, Any]]]]:
        """The recipient's entries, oldest first, each with its current status and errors."""
        with self._lock:
            entries = list(self._conversations.get(wa_id, ()))
            return [
                (entry, entry.last_status, list(entry.errors))
                if isinstance(entry, OutboundMessage)
                else (entry, "", [])
                for entry in entries
            ]
