"""What the sink received: every accepted message, byte for byte, in a Maildir.

One file per message, named as ``mailbox`` names them, so any mail client
can open the folder. Each message is read back with its DKIM verdict,
computed once (a stored message never changes).
"""

from __future__ import annotations

import email
import itertools
import mailbox
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from cakra.simulators.smtp.dns import DkimVerdict, SimulatedDkimDns, dkim_check

KEY_PATTERN = re.compile(r"[A-Za-z0-9._\-\\]+")
MAILDIR_NAME = re.compile(r"(\d+)\.M(\d+)P(\d+)Q(\d+)")


def _arrival_order(key: str) -> tuple[int, int, int, int, str]:
    """Maildir names start ``<seconds>.M<microseconds>P<pid>Q<count>``: the
    delivery order, known without reading the files."""
    match = MAILDIR_NAME.match(key)
    if match is None:  # a file dropped in by hand
        return (0, 0, 0, 0, key)
    seconds, micros, pid, count = (int(group) for group in match.groups())
    return (seconds, micros, pid, count, key)


@dataclass(frozen=True, slots=True)
class SinkMessage:
    id: str
    received_at: datetime
    sender: str
    recipients: str
    subject: str
    dkim: DkimVerdict
    raw: bytes = field(repr=False)

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(message, EmailMessage)  # noqa: S101 - the default policy builds EmailMessage
        return message

    def text_body(self) -> str:
        part = self.parsed().get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""

    def html_body(self) -> str:
        part = self.parsed().get_body(preferencelist=("html",))
        return str(part.get_content()) if part is not None else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.recipients,
            "subject": self.subject,
            "dkim_pass": self.dkim.passed,
            "dkim_domain": self.dkim.domain,
            "received_at": self.received_at.isoformat(),
        }


class MailStore:
    """The Maildir at ``path``: written by the SMTP server's thread, read by the web pages' threads."""

    def __init__(self, *, path: Path, dns: SimulatedDkimDns) -> None:
        self.path = path
        self._dns = dns
        self._lock = threading.Lock()
        self._verdicts: dict[str, DkimVerdict] = {}
        self._maildir: mailbox.Maildir | None = None  # for reading; new messages are written directly
        # Maildir file names: <seconds>.M<microseconds>P<pid>Q<count>.<host>, as mailbox writes them.
        self._name_suffix = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._name_count = itertools.count()

    def open(self) -> None:
        """Create the Maildir (tmp/, new/, cur/) if it does not exist yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(self.path, create=True)

    def _box(self) -> mailbox.Maildir:
        if self._maildir is None:
            self._maildir = mailbox.Maildir(self.path, create=True)
        return self._maildir

    def store(self, raw: bytes) -> str:
        """Keep one message exactly as received, as a Maildir file in new/; returns its id.

        Written to tmp/ and renamed into new/, as Maildir requires, so a
        reader (or a crash of this process) never sees half a message. Unlike
        ``mailbox.Maildir.add`` there is no fsync: that guards against a power
        cut, not a process crash, and would cost several times the write
        itself while blocking the SMTP loop; a simulator that loses its last
        messages with the machine loses nothing anyone relies on.
        """
        now = time.time()
        seconds = int(now)
        key = f"{seconds}.M{int((now - seconds) * 1e6)}P{os.getpid()}Q{next(self._name_count)}.{self._name_suffix}"
        temporary = os.path.join(self.path, "tmp", key)  # noqa: PTH118 - str paths: one fewer object per message
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(descriptor, view) :]
            finally:
                os.close(descriptor)
        except BaseException:
            os.unlink(temporary)  # noqa: PTH108
            raise
        os.rename(temporary, os.path.join(self.path, "new", key))  # noqa: PTH104, PTH118
        return key

    def message(self, message_id: str) -> SinkMessage | None:
        if not KEY_PATTERN.fullmatch(message_id):
            return None
        with self._lock:
            box = self._box()
            try:
                stored = box.get_message(message_id)
                raw = box.get_bytes(message_id)
            except KeyError:
                return None
        return self._describe(message_id, stored, raw)

    def count(self) -> int:
        with self._lock:
            return len(self._box())

    def messages(self, *, limit: int | None = None) -> list[SinkMessage]:
        """Stored messages, newest first; only the newest ``limit`` are read
        (a benchmark leaves a million messages here)."""
        with self._lock:
            box = self._box()
            keys = sorted(box.keys(), key=_arrival_order, reverse=True)[:limit]
            items = [(key, box.get_message(key), box.get_bytes(key)) for key in keys]
        return [self._describe(key, stored, raw) for key, stored, raw in items]

    def _describe(self, key: str, stored: mailbox.MaildirMessage, raw: bytes) -> SinkMessage:
        with self._lock:
            verdict = self._verdicts.get(key)
        if verdict is None:  # stored messages never change: verify each once
            verdict = dkim_check(raw, dns=self._dns)
            with self._lock:
                self._verdicts[key] = verdict
        headers = email.message_from_bytes(raw, policy=default_policy)
        return SinkMessage(
            id=key,
            received_at=datetime.fromtimestamp(stored.get_date(), tz=UTC),
            # A folded header keeps the fold's leading space: strip it for display.
            sender=str(headers.get("From", "")).strip(),
            recipients=str(headers.get("To", "")).strip(),
            subject=str(headers.get("Subject", "")).strip(),
            dkim=verdict,
            raw=raw,
        )
