"""The sink as the provider's event webhook: receipts posted to Cakra over HTTP.

Given a receipt URL and secret (``CAKRA_SINK["RECEIPT_URL"]``,
``["RECEIPT_SECRET"]``), the sink reports ``delivered`` for every message it
stores to Cakra's signed receipt endpoint, keyed by the message's Message-ID
(the reference the email adapter returned); the recipients listed in
:mod:`cakra.simulators.smtp.recipients` are reported otherwise, later, as
real providers do. Two background threads post the events in batches (every
200 ms or 500 events, whichever comes first), retrying with backoff while the
web server is down or answers 5xx; events the endpoint does not recognise yet
(the worker had not recorded the send when the report arrived) are reported
again a few times, then given up.

Each request is signed as any provider signs it (:mod:`cakra.security.signing`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog

from cakra.security.signing import SIGNATURE_HEADER, receipt_signature_header
from cakra.simulators.loopback import LOOPBACK_NAMES
from cakra.simulators.smtp.recipients import reports_for

logger = structlog.get_logger(__name__)

REPORT_BATCH_SECONDS = 0.2
REPORT_BATCH_SIZE = 500
# Requests in flight at once: the endpoint's web workers record one batch
# each while the next is on its way (a provider's webhook fan-out does the same).
REPORT_POSTERS = 2
REPORT_TIMEOUT_SECONDS = 10.0
REPORT_BACKOFF_MAX_SECONDS = 30.0
# An event the endpoint does not know yet is reported again this many times
# (after 1, 2, 4 … 30 s: about two minutes in all), then given up.
UNKNOWN_REFERENCE_TRIES = 8
MAX_ANSWER_BYTES = 4 * 1024 * 1024
STOP_GRACE_SECONDS = 2.0
# The receipt endpoint's pattern for a reference (cakra.api.receipts): a
# Message-ID outside it would make the endpoint refuse the whole batch.
REPORTABLE_REFERENCE = re.compile(r"[\x21-\x7e]{1,128}")

# Where the header section may end; a longer one is searched this far only.
HEADER_SCAN_LIMIT = 64 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# The first Message-ID field (any case) with its folded continuation lines.
_MESSAGE_ID_FIELD = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def message_reference(raw: bytes) -> str:
    """The Message-ID header of ``raw`` as the sender wrote it (unfolded), or "".

    A bounded scan of the header section, not the email package's parser:
    this runs for every message the sink stores.
    """
    if raw.startswith((b"\r\n", b"\n")):  # no header section at all
        return ""
    end = _HEADER_END.search(raw, 0, HEADER_SCAN_LIMIT)
    headers = raw[: end.start() if end else HEADER_SCAN_LIMIT]
    field = _MESSAGE_ID_FIELD.search(headers)
    if field is None:
        return ""
    return b" ".join(field.group(1).split()).decode("ascii", "replace")


@dataclass(slots=True)
class _PendingEvent:
    payload: dict[str, str]
    due: float  # time.monotonic() when it may be posted
    unknown_tries: int = 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A receipt endpoint that redirects is misconfigured: never follow it elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ReceiptReporter:
    """Posts the sink's events to Cakra's receipt webhook, signed, in batches.

    Events wait in memory; ``posters`` threads post them. Connection errors, 5xx and
    429 keep the batch and retry it with backoff (never dropping while the
    sink runs); other 4xx answers mean the request itself is wrong and
    retrying cannot help, so that batch is logged and dropped. ``stop()``
    gives the queue a short grace period to drain.
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        batch_seconds: float = REPORT_BATCH_SECONDS,
        batch_size: int = REPORT_BATCH_SIZE,
        posters: int = REPORT_POSTERS,
    ) -> None:
        parts = urlsplit(url)
        # The simulator talks to the local system only: a configuration
        # mistake must not post message ids to another host.
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_NAMES:
            raise ValueError("the sink reports receipts only to an http:// loopback URL")
        if not secret:
            raise ValueError("a receipt URL needs its signing secret")
        self.url = url
        self._secret = secret
        self._batch_seconds = batch_seconds
        self._batch_size = batch_size
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._condition = threading.Condition()
        self._ready: deque[_PendingEvent] = deque()
        self._delayed: list[tuple[float, int, _PendingEvent]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._failures = 0  # consecutive failed posts, shared by the posters
        self._hold_until = 0.0  # no post before this (backoff after a failure)
        self._stopping = False
        self._stop_deadline = 0.0
        self._posters = posters
        self._threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()

    # --- producer side ---------------------------------------------------------
    def report_stored(self, *, key: str, raw: bytes, recipients: list[str]) -> None:
        """Queue the events for a message the sink just stored under ``key``."""
        reference = message_reference(raw)
        if not reference:
            logger.info("sink.receipt_skipped_no_message_id", key=key)
            return
        if not REPORTABLE_REFERENCE.fullmatch(reference):
            logger.info("sink.receipt_skipped_bad_message_id", key=key)
            return
        # Derived from the stored message's key: a report posted twice carries
        # the same event id, as a real provider's retry would.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        for event, delay in reports_for(recipients):
            self.report(message_id=reference, event=event, event_id=f"sink-{event}-{digest}", delay=delay)

    def report(self, *, message_id: str, event: str, event_id: str, delay: float = 0.0, detail: str = "") -> None:
        """Queue one event about ``message_id``, to be posted after ``delay`` seconds."""
        happens = datetime.now(UTC) + timedelta(seconds=delay)
        payload = {
            "event_id": event_id,
            "message_id": message_id,
            "event": event,
            "timestamp": happens.isoformat(timespec="milliseconds"),
            "detail": detail,
        }
        self._schedule(_PendingEvent(payload=payload, due=time.monotonic() + delay))

    def _schedule(self, pending: _PendingEvent) -> None:
        with self._condition:
            if pending.due <= time.monotonic():
                self._ready.append(pending)
                # A waiting poster already times the batch by its oldest event:
                # wake it only when a batch starts or fills up, not once per
                # message (each wake-up is a thread switch for nothing).
                wake = len(self._ready) == 1 or len(self._ready) >= self._batch_size
            else:
                heapq.heappush(self._delayed, (pending.due, next(self._sequence), pending))
                wake = self._delayed[0][2] is pending  # a new earliest deadline
            if wake:
                self._condition.notify()

    def pending(self) -> int:
        """Events not yet accepted by the endpoint (queued, delayed or being posted)."""
        with self._condition:
            return len(self._ready) + len(self._delayed) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued event was posted (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run, name=f"cakra-sink-receipts-{n}", daemon=True)
            for n in range(self._posters)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        with self._condition:
            self._stopping = True
            self._stop_deadline = time.monotonic() + grace
            self._condition.notify()
        for thread in self._threads:
            thread.join(timeout=grace + REPORT_TIMEOUT_SECONDS)
        self._threads = []
        left = self.pending()
        if left:
            logger.warning("sink.receipts_unsent_at_stop", events=left)

    # --- the posting thread ----------------------------------------------------------
    def _next_batch(self) -> list[_PendingEvent] | None:
        """Wait for a batch worth posting; None when it is time to stop."""
        with self._condition:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._ready.append(heapq.heappop(self._delayed)[2])
                if self._stopping and (not self._ready or now >= self._stop_deadline):
                    return None
                if now < self._hold_until and not self._stopping:
                    self._condition.wait(self._hold_until - now)
                    continue
                oldest_wait = now - self._ready[0].due if self._ready else 0.0
                if len(self._ready) >= self._batch_size or (
                    self._ready and (oldest_wait >= self._batch_seconds or self._stopping)
                ):
                    count = min(self._batch_size, len(self._ready))
                    batch = [self._ready.popleft() for _ in range(count)]
                    self._in_flight += len(batch)
                    if len(self._ready) >= self._batch_size:
                        self._condition.notify()  # another full batch: the other poster may take it
                    return batch
                timeout = 1.0
                if self._ready:
                    timeout = min(timeout, self._batch_seconds - oldest_wait)
                if self._delayed:
                    timeout = min(timeout, self._delayed[0][0] - now)
                if self._stopping:
                    timeout = min(timeout, self._stop_deadline - now)
                self._condition.wait(max(timeout, 0.001))

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                verdict, answer = self._post(batch)
            except Exception as exc:  # noqa: BLE001 - the posting thread must outlive any surprise
                logger.error("sink.receipts_post_crashed", error=type(exc).__name__)  # noqa: TRY400 - the type is enough
                verdict, answer = "retry", {}
            with self._condition:
                self._in_flight -= len(batch)
                if verdict == "retry":
                    # Back at the front, in order: nothing is dropped while running.
                    self._ready.extendleft(reversed(batch))
                    self._failures += 1
                    backoff = min(REPORT_BACKOFF_MAX_SECONDS, 0.25 * 2**self._failures)
                    self._hold_until = max(self._hold_until, time.monotonic() + backoff)
                    self.counts["retries"] += 1
                    continue
                self._failures = 0
                if verdict == "rejected":
                    self.counts["rejected"] += len(batch)
                    continue
            self._handle_answer(batch, answer)

    def _handle_answer(self, batch: list[_PendingEvent], answer: dict[str, Any]) -> None:
        results = answer.get("results")
        outcomes = {
            item.get("event_id"): item.get("outcome")
            for item in (results if isinstance(results, list) else [])
            if isinstance(item, dict)
        }
        tally: Counter[str] = Counter()
        for pending in batch:
            outcome = outcomes.get(pending.payload["event_id"], "unknown_reference")
            if outcome != "unknown_reference":
                tally[str(outcome)] += 1
                continue
            if pending.unknown_tries >= UNKNOWN_REFERENCE_TRIES:
                tally["unknown_given_up"] += 1
                logger.info("sink.receipt_given_up", event_id=pending.payload["event_id"])
                continue
            pending.unknown_tries += 1
            pending.due = time.monotonic() + min(REPORT_BACKOFF_MAX_SECONDS, 2.0 ** (pending.unknown_tries - 1))
            self._schedule(pending)
        with self._condition:
            self.counts.update(tally)

    def _post(self, batch: list[_PendingEvent]) -> tuple[str, dict[str, Any]]:
        """("ok", answer) | ("retry", {}) | ("rejected", {})."""
        body = json.dumps([pending.payload for pending in batch], separators=(",", ":")).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL was checked to be http on loopback
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: receipt_signature_header(secret=self._secret, body=body),
            },
        )
        try:
            with self._opener.open(request, timeout=REPORT_TIMEOUT_SECONDS) as response:
                answer = json.loads(response.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            if status == 404 and len(batch) == 1:  # noqa: PLR2004 - a single unknown reference
                return "ok", {"results": [{"event_id": batch[0].payload["event_id"], "outcome": "unknown_reference"}]}
            if status >= 500 or status == 429:  # noqa: PLR2004
                logger.warning("sink.receipts_post_failed", status=status, events=len(batch))
                return "retry", {}
            logger.error("sink.receipts_post_rejected", status=status, events=len(batch))  # noqa: TRY400 - no traceback wanted
            return "rejected", {}
        except (OSError, ValueError) as exc:
            # Refused, reset, timed out, or an answer that is not JSON.
            logger.warning("sink.receipts_post_failed", error=type(exc).__name__, events=len(batch))
            return "retry", {}
        with self._condition:
            self.counts["posts"] += 1
        return "ok", answer if isinstance(answer, dict) else {}
