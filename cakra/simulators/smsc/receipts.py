"""Delivery receipts as an SMSC sends them: ``deliver_sm`` down a bound session.

A receipt is due some time after its message was accepted; it then goes
to a session of the same ``system_id`` bound as receiver or transceiver
(round robin), or waits for one to bind. A ``deliver_sm_resp`` with a
non-zero status (``ESME_RX_T_APPN``: the client does not know the message
yet), no answer in time, or the session closing before the answer puts it
back, after a backoff, a few times; then it is given up, as SMSCs do.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

logger = structlog.get_logger(__name__)

RESPONSE_TIMEOUT_SECONDS = 10.0
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
MAX_TRIES = 8
IDLE_WAIT_SECONDS = 0.5


@dataclass(slots=True)
class Receipt:
    system_id: str
    message_id: str
    handset: str  # the recipient: the receipt comes "from" the handset
    sender: str  # the ESME's source address: the receipt goes "to" it
    stat: str
    error: str
    message_state: int
    submitted_at: datetime
    done_at: datetime
    text_start: str
    tries: int = 0

    def text(self) -> str:
        """The receipt text of SMPP v3.4 appendix B."""
        delivered = "001" if self.stat == "DELIVRD" else "000"
        return (
            f"id:{self.message_id} sub:001 dlvrd:{delivered} "
            f"submit date:{self.submitted_at:%y%m%d%H%M} done date:{self.done_at:%y%m%d%H%M} "
            f"stat:{self.stat} err:{self.error} text:{self.text_start}"
        )


class ReceiptSession(Protocol):
    system_id: str

    def receipt_send(self, receipt: Receipt, *, register: Callable[[int], None]) -> bool:
        """Build the deliver_sm, ``register`` its sequence number, write it;
        False when the session is gone."""


class ReceiptDispatcher:
    def __init__(
        self,
        *,
        retry_base: float = RETRY_BASE_SECONDS,
        response_timeout: float = RESPONSE_TIMEOUT_SECONDS,
        max_tries: int = MAX_TRIES,
    ) -> None:
        self._retry_base = retry_base
        self._response_timeout = response_timeout
        self._max_tries = max_tries
        self._condition = threading.Condition()
        self._due: list[tuple[float, int, Receipt]] = []
        self._order = itertools.count()
        self._waiting: defaultdict[str, list[Receipt]] = defaultdict(list)  # no session bound yet
        self._sessions: defaultdict[str, list[ReceiptSession]] = defaultdict(list)
        self._turn = itertools.count()
        # (session, sequence) -> (receipt, when sent)
        self._outstanding: dict[tuple[int, int], tuple[Receipt, float, ReceiptSession]] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.counts: Counter[str] = Counter()

    # --- sessions ------------------------------------------------------------------------
    def session_bound(self, session: ReceiptSession) -> None:
        with self._condition:
            self._sessions[session.system_id].append(session)
            for receipt in self._waiting.pop(session.system_id, []):
                self._push(time.monotonic(), receipt)
            self._condition.notify()

    def session_closed(self, session: ReceiptSession) -> None:
        """Forget the session; what it had not answered goes out again."""
        with self._condition:
            members = self._sessions.get(session.system_id, [])
            if session in members:
                members.remove(session)
            for key in [key for key, (_, _, owner) in self._outstanding.items() if owner is session]:
                receipt, _, _ = self._outstanding.pop(key)
                self._push(time.monotonic(), receipt)
            self._condition.notify()

    # --- receipts ------------------------------------------------------------------------
    def schedule(self, receipt: Receipt, *, delay: float = 0.0) -> None:
        with self._condition:
            self._push(time.monotonic() + delay, receipt)
            self._condition.notify()

    def _push(self, due: float, receipt: Receipt) -> None:
        heapq.heappush(self._due, (due, next(self._order), receipt))

    def sent(self, session: ReceiptSession, sequence: int, *, receipt: Receipt) -> None:
        """Note a deliver_sm written outside the dispatcher (before a submit_sm_resp)."""
        with self._condition:
            receipt.tries += 1
            self.counts["sent"] += 1
            self._outstanding[(id(session), sequence)] = (receipt, time.monotonic(), session)

    def answered(self, session: ReceiptSession, sequence: int, status: int) -> None:
        with self._condition:
            entry = self._outstanding.pop((id(session), sequence), None)
            if entry is None:
                return
            receipt = entry[0]
            if status == 0:
                self.counts["acknowledged"] += 1
                return
            self._retry(receipt)
            self._condition.notify()

    def _retry(self, receipt: Receipt) -> None:
        if receipt.tries >= self._max_tries:
            self.counts["given_up"] += 1
            logger.info("smsc.receipt_given_up", message_id=receipt.message_id, tries=receipt.tries)
            return
        self.counts["retried"] += 1
        delay = min(self._retry_base * 2 ** (receipt.tries - 1), RETRY_MAX_SECONDS)
        self._push(time.monotonic() + delay, receipt)

    def pending(self) -> int:
        with self._condition:
            return len(self._due) + len(self._outstanding) + sum(len(items) for items in self._waiting.values())

    # --- the thread --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cakra-smsc-receipts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _next(self) -> tuple[Receipt, ReceiptSession] | None:
        with self._condition:
            while not self._stopping:
                now = time.monotonic()
                for key, (receipt, sent_at, _) in list(self._outstanding.items()):
                    if now - sent_at > self._response_timeout:
                        del self._outstanding[key]
                        self._retry(receipt)
                if self._due and self._due[0][0] <= now:
                    receipt = heapq.heappop(self._due)[2]
                    members = self._sessions.get(receipt.system_id)
                    if not members:
                        self._waiting[receipt.system_id].append(receipt)
                        continue
                    return receipt, members[next(self._turn) % len(members)]
                wait = self._due[0][0] - now if self._due else IDLE_WAIT_SECONDS
                self._condition.wait(min(wait, IDLE_WAIT_SECONDS))
            return None

    def _run(self) -> None:
        while (chosen := self._next()) is not None:
            receipt, session = chosen
            # Registered before the write: the answer may come before this thread runs again.
            if not session.receipt_send(receipt, register=functools.partial(self.sent, session, receipt=receipt)):
                self.session_closed(session)
