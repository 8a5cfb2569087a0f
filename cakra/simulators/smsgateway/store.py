"""What the gateway received: every accepted message, its status history, and the copies.

In memory (a benchmark's hundred thousand messages are a few tens of
megabytes), shared by the request threads, the callback posters and the pages.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(slots=True)
class StatusChange:
    status: str
    at: datetime
    error_code: int | None = None


@dataclass(slots=True)
class GatewayMessage:
    sid: str
    account_sid: str
    to: str = field(repr=False)
    sender: str
    body: str = field(repr=False)
    status_callback: str
    created_at: datetime
    segments: int
    history: list[StatusChange] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.history[-1].status if self.history else "queued"

    @property
    def error_code(self) -> int | None:
        return self.history[-1].error_code if self.history else None

    def as_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.sender,
            "body": self.body,
            "status": self.status,
            "error_code": self.error_code,
            "num_segments": self.segments,
            "date_created": self.created_at.isoformat(),
            "history": [
                {"status": change.status, "at": change.at.isoformat(), "error_code": change.error_code}
                for change in self.history
            ],
        }


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class MessageStore:
    """Accepted messages by SID, in arrival order, and how often each (To, Body) came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, GatewayMessage] = {}
        self._copies: Counter[tuple[str, str]] = Counter()

    def add(self, message: GatewayMessage) -> None:
        with self._lock:
            self._messages[message.sid] = message
            self._copies[(message.to, body_digest(message.body))] += 1

    def status_set(self, sid: str, status: str, *, error_code: int | None = None) -> None:
        with self._lock:
            message = self._messages.get(sid)
            if message is not None:
                message.history.append(StatusChange(status=status, at=datetime.now(UTC), error_code=error_code))

    def get(self, sid: str) -> GatewayMessage | None:
        with self._lock:
            return self._messages.get(sid)

    def count(self) -> int:
        with self._lock:
            return len(self._messages)

    def messages(self, *, limit: int | None = None, to: str | None = None) -> list[GatewayMessage]:
        """Newest first; only ``to``'s when given."""
        with self._lock:
            chosen = [m for m in reversed(self._messages.values()) if to is None or m.to == to]
        return chosen[:limit]

    def recipients(self) -> list[tuple[str, int, GatewayMessage]]:
        """(number, messages, newest message) per recipient, most recent first."""
        with self._lock:
            newest: dict[str, GatewayMessage] = {}
            counts: Counter[str] = Counter()
            for message in self._messages.values():
                newest[message.to] = message
                counts[message.to] += 1
        ordered = sorted(newest.values(), key=lambda m: m.created_at, reverse=True)
        return [(m.to, counts[m.to], m) for m in ordered]

    def received(self) -> dict[str, Any]:
        """The copies per (To, Body): what a benchmark counts duplicates with."""
        with self._lock:
            copies = list(self._copies.items())
            total = len(self._messages)
        duplicated = [(key, count) for key, count in copies if count > 1]
        return {
            "messages": total,
            "distinct": len(copies),
            "duplicates": sum(count - 1 for _, count in duplicated),
            "duplicated": [{"to": to, "body_digest": digest, "copies": count} for (to, digest), count in duplicated],
        }
