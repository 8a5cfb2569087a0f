"""The gateway's status callbacks: each status change posted to the message's ``StatusCallback``.

As Twilio posts them: one form-encoded POST per status change, with
``MessageSid``, ``SmsSid``, ``MessageStatus``, ``SmsStatus``, ``AccountSid``,
``From``, ``To``, ``ApiVersion`` and, for ``undelivered``/``failed``,
``ErrorCode``, signed with ``X-Twilio-Signature`` over the URL exactly as
given and the sorted parameters (:func:`cakra.security.signing.twilio_signature`).

A callback answered non-2xx, or not answered, is posted again with backoff
(0.25 s, doubling, at most ``CALLBACK_TRIES`` posts in all; a ``Retry-After``
the endpoint names is honoured within that), then given up: Cakra answers
503 for a message it has not recorded yet, and the retry finds it recorded.
Posted to loopback URLs only (:mod:`cakra.simulators.loopback`).
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import structlog

from cakra.security.identifiers import ascii_int_parse
from cakra.security.signing import TWILIO_SIGNATURE_HEADER, twilio_signature
from cakra.simulators.loopback import LOOPBACK_NAMES

logger = structlog.get_logger(__name__)

API_VERSION = "2010-04-01"
CALLBACK_TRIES = 6
CALLBACK_BACKOFF_SECONDS = 0.25
CALLBACK_BACKOFF_MAX_SECONDS = 8.0
CALLBACK_TIMEOUT_SECONDS = 10.0
CALLBACK_POSTERS = 4
MAX_ANSWER_BYTES = 64 * 1024
STOP_GRACE_SECONDS = 2.0


def callback_url_allowed(url: str) -> bool:
    """An http(s) URL on this machine: the only place the simulator posts to."""
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and parts.hostname in LOOPBACK_NAMES and not parts.username


@dataclass(slots=True)
class Callback:
    url: str
    params: dict[str, str]
    due: float
    tries: int = 0
    # The message's next status change, queued once this one is done (posted
    # or given up), ``delay`` seconds later: a message's statuses go in order.
    then: Callback | None = None
    delay: float = 0.0


class CallbackReporter:
    """Posts status callbacks from ``posters`` threads, retrying with backoff."""

    def __init__(
        self,
        *,
        auth_token: str,
        on_status: Callable[[dict[str, str]], None] | None = None,
        posters: int = CALLBACK_POSTERS,
        tries: int = CALLBACK_TRIES,
    ) -> None:
        self._auth_token = auth_token
        # Called once per status change when it becomes due (the store's history).
        self._on_status = on_status
        self._posters = posters
        self._tries = tries
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int, Callback]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()

    def report(self, *, url: str, changes: list[dict[str, str]], delay: float = 0.0) -> None:
        """Queue a message's status changes, in order, each ``delay`` seconds after
        the previous one is done (only recorded, when the message asked for no
        callback: ``url`` "")."""
        if url and not callback_url_allowed(url):
            raise ValueError("the simulator posts callbacks to loopback http(s) URLs only")
        chain: Callback | None = None
        for params in reversed(changes):
            chain = Callback(url=url, params=params, due=0.0, then=chain, delay=delay)
        if chain is not None:
            chain.due = time.monotonic() + delay
            self._schedule(chain)

    def _done(self, callback: Callback) -> None:
        following = callback.then
        if following is not None:
            following.due = time.monotonic() + following.delay
            self._schedule(following)

    def _schedule(self, callback: Callback) -> None:
        with self._condition:
            heapq.heappush(self._queue, (callback.due, next(self._sequence), callback))
            self._condition.notify()

    def pending(self) -> int:
        with self._condition:
            return len(self._queue) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued callback was posted or given up (True), or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run, name=f"cakra-sms-gateway-callbacks-{n}", daemon=True)
            for n in range(self._posters)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        with self._condition:
            self._stopping = True
            self._stop_deadline = time.monotonic() + grace
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=grace + CALLBACK_TIMEOUT_SECONDS)
        self._threads = []
        left = self.pending()
        if left:
            logger.warning("sms_gateway.callbacks_unsent_at_stop", callbacks=left)

    # --- the posting threads -------------------------------------------------------
    def _next(self) -> Callback | None:
        with self._condition:
            while True:
                now = time.monotonic()
                if self._stopping and (not self._queue or now >= self._stop_deadline):
                    return None
                if self._queue and self._queue[0][0] <= now:
                    callback = heapq.heappop(self._queue)[2]
                    self._in_flight += 1
                    return callback
                timeout = self._queue[0][0] - now if self._queue else 1.0
                if self._stopping:
                    timeout = min(timeout, self._stop_deadline - now)
                self._condition.wait(max(min(timeout, 1.0), 0.001))

    def _run(self) -> None:
        while (callback := self._next()) is not None:
            if callback.tries == 0 and self._on_status is not None:
                self._on_status(callback.params)
            if not callback.url:
                with self._condition:
                    self.counts["not_requested"] += 1
                self._done(callback)
                with self._condition:
                    self._in_flight -= 1
                continue
            try:
                status, retry_after = self._post(callback)
            except Exception as exc:  # noqa: BLE001 - the posting thread must outlive any surprise
                logger.error("sms_gateway.callback_crashed", error=type(exc).__name__)  # noqa: TRY400 - the type is enough
                status, retry_after = 0, None
            callback.tries += 1
            outcome = "posted" if 200 <= status < 300 else "retry"  # noqa: PLR2004 - 2xx
            if outcome == "retry" and callback.tries >= self._tries:
                outcome = "given_up"
                logger.info("sms_gateway.callback_given_up", sid=callback.params.get("MessageSid"), status=status)
            if outcome != "retry":
                self._done(callback)  # queued before this one stops counting as pending
            else:
                # Queued again before it stops counting as in flight: never idle in between.
                backoff = min(CALLBACK_BACKOFF_MAX_SECONDS, CALLBACK_BACKOFF_SECONDS * 2 ** (callback.tries - 1))
                if retry_after is not None:
                    backoff = min(CALLBACK_BACKOFF_MAX_SECONDS, max(backoff, float(retry_after)))
                callback.due = time.monotonic() + backoff
                self._schedule(callback)
            with self._condition:
                self._in_flight -= 1
                self.counts[outcome] += 1
                if status:
                    self.counts[f"status_{status}"] += 1

    def _post(self, callback: Callback) -> tuple[int, int | None]:
        """(status, Retry-After seconds) of one post; status 0 when it got no answer."""
        body = urlencode(callback.params).encode("ascii")
        parts = urlsplit(callback.url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(str(parts.hostname), parts.port, timeout=CALLBACK_TIMEOUT_SECONDS)
        try:
            connection.request(
                "POST",
                target,
                body=body,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                    "User-Agent": "TwilioProxy/1.1 (cakra simulator)",
                    TWILIO_SIGNATURE_HEADER: twilio_signature(
                        auth_token=self._auth_token, url=callback.url, params=callback.params
                    ),
                },
            )
            response = connection.getresponse()
            response.read(MAX_ANSWER_BYTES)
            return response.status, ascii_int_parse((response.getheader("Retry-After") or "").strip())
        except (OSError, http.client.HTTPException) as exc:
            logger.warning("sms_gateway.callback_failed", error=type(exc).__name__)
            return 0, None
        finally:
            connection.close()


def callback_params(
    *, sid: str, account_sid: str, sender: str, to: str, status: str, error_code: int | None = None
) -> dict[str, str]:
    """The form fields of one status callback, as Twilio names them."""
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "From": sender,
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": to,
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params
