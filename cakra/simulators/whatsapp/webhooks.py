"""The simulator as Meta's webhook sender: signed ``messages`` notifications posted to Cakra.

Status changes of the messages it accepted (``sent``, ``delivered``,
``read``, ``failed`` with ``errors[]``) and the citizens' inbound messages
are posted to the configured URL in Meta's envelope::

    {"object": "whatsapp_business_account",
     "entry": [{"id": <WABA id>, "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": ..., "phone_number_id": ...},
         "statuses": [...]  |  "contacts": [...], "messages": [...]}}]}]}

signed as Meta signs: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
raw body with the app secret>``. Like Meta, it batches several updates in one
POST (one change per business number and kind), and a POST answered other
than 2xx, or not answered, is delivered again, byte for byte, after a
growing delay, a few times, then dropped (and counted). Background threads
post; ``report_*`` only queue.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog

from cakra.simulators.loopback import LOOPBACK_NAMES

logger = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
BATCH_SIZE_DEFAULT = 100
BATCH_DELAY_SECONDS_DEFAULT = 0.05
MAX_TRIES_DEFAULT = 6
RETRY_BASE_SECONDS_DEFAULT = 1.0
RETRY_MAX_SECONDS = 60.0
POSTERS_DEFAULT = 2
POST_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 2.0
MAX_ANSWER_BYTES = 64 * 1024

StatusRecorder = Callable[[str, str, float, list[dict[str, Any]]], None]


def hub_signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends with ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def loopback_url_check(url: str) -> None:
    parts = urlsplit(url)
    # A simulator holds phone numbers and message texts: a configuration
    # mistake must not post them to another host.
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_NAMES:
        raise ValueError("the WhatsApp simulator posts webhooks only to an http:// loopback URL")


@dataclass(slots=True)
class _Update:
    phone_number_id: str
    kind: str  # "statuses" | "messages"
    item: dict[str, Any]
    contact: dict[str, Any] | None  # with an inbound message: who sent it
    due: float  # time.monotonic()


@dataclass(slots=True)
class _Post:
    body: bytes
    updates: int
    tries: int = 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookReporter:
    """Queues updates and posts them, signed and batched, from background threads."""

    def __init__(
        self,
        *,
        url: str,
        app_secret: str,
        waba_id: str,
        display_numbers: Mapping[str, str],
        on_status: StatusRecorder | None = None,
        batch_size: int = BATCH_SIZE_DEFAULT,
        batch_delay: float = BATCH_DELAY_SECONDS_DEFAULT,
        max_tries: int = MAX_TRIES_DEFAULT,
        retry_base: float = RETRY_BASE_SECONDS_DEFAULT,
        posters: int = POSTERS_DEFAULT,
    ) -> None:
        loopback_url_check(url)
        if not app_secret:
            raise ValueError("a webhook URL needs the app secret that signs its posts")
        if batch_size < 1 or max_tries < 1 or posters < 1:
            raise ValueError("batch size, tries and posters are at least 1")
        self.url = url
        self._app_secret = app_secret
        self._waba_id = waba_id
        self._display_numbers = dict(display_numbers)
        self._on_status = on_status
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        self._max_tries = max_tries
        self._retry_base = retry_base
        self._posters = posters
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._condition = threading.Condition()
        self._ready: deque[_Update] = deque()
        self._delayed: list[tuple[float, int, _Update]] = []
        self._retries: list[tuple[float, int, _Post]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()

    # --- producer side -----------------------------------------------------------
    def report_status(self, *, phone_number_id: str, status: dict[str, Any], delay: float = 0.0) -> None:
        """Queue one ``statuses[]`` item, to be posted after ``delay`` seconds."""
        self._schedule(_Update(phone_number_id, "statuses", status, None, time.monotonic() + delay))

    def report_message(self, *, phone_number_id: str, message: dict[str, Any], contact: dict[str, Any]) -> None:
        """Queue one inbound ``messages[]`` item with its sender's ``contacts[]`` entry."""
        self._schedule(_Update(phone_number_id, "messages", message, contact, time.monotonic()))

    def _schedule(self, update: _Update) -> None:
        with self._condition:
            if update.due <= time.monotonic():
                self._ready.append(update)
                wake = len(self._ready) == 1 or len(self._ready) >= self._batch_size
            else:
                heapq.heappush(self._delayed, (update.due, next(self._sequence), update))
                wake = self._delayed[0][2] is update
            if wake:
                self._condition.notify()

    def pending(self) -> int:
        """Updates not yet accepted by the endpoint (queued, delayed, posting or waiting to be redelivered)."""
        with self._condition:
            return (
                len(self._ready)
                + len(self._delayed)
                + sum(post.updates for _, _, post in self._retries)
                + self._in_flight
            )

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # --- Meta's verification handshake ---------------------------------------------
    def verify_subscription(self, verify_token: str) -> bool:
        """Do what Meta does when a webhook is configured: ``GET url?hub.mode=subscribe
        &hub.verify_token=…&hub.challenge=…``; True when the endpoint echoed the challenge."""
        challenge = str(secrets.randbelow(10**9))
        query = urlencode({"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge})
        separator = "&" if urlsplit(self.url).query else "?"
        request = urllib.request.Request(f"{self.url}{separator}{query}", method="GET")  # noqa: S310 - loopback http
        try:
            with self._opener.open(request, timeout=POST_TIMEOUT_SECONDS) as response:
                answer = response.read(MAX_ANSWER_BYTES)
        except (OSError, ValueError) as exc:
            logger.info("whatsapp_sim.verify_failed", error=type(exc).__name__)
            return False
        return hmac.compare_digest(answer.strip(), challenge.encode())

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run, name=f"cakra-whatsapp-sim-webhooks-{n}", daemon=True)
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
            thread.join(timeout=grace + POST_TIMEOUT_SECONDS)
        self._threads = []
        left = self.pending()
        if left:
            logger.warning("whatsapp_sim.webhooks_unsent_at_stop", updates=left)

    # --- the posting threads -----------------------------------------------------------
    def _next_post(self) -> _Post | None:  # noqa: C901 - one loop deciding between three queues
        """Wait for a POST worth making (a redelivery or a new batch); None when stopping."""
        with self._condition:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._ready.append(heapq.heappop(self._delayed)[2])
                if self._stopping and now >= self._stop_deadline:
                    return None
                if self._retries and self._retries[0][0] <= now:
                    post = heapq.heappop(self._retries)[2]
                    self._in_flight += post.updates
                    return post
                oldest_wait = now - self._ready[0].due if self._ready else 0.0
                if len(self._ready) >= self._batch_size or (
                    self._ready and (oldest_wait >= self._batch_delay or self._stopping)
                ):
                    batch = [self._ready.popleft() for _ in range(min(self._batch_size, len(self._ready)))]
                    self._in_flight += len(batch)
                    if self._ready:
                        self._condition.notify()
                    return _Post(body=self._envelope(batch), updates=len(batch))
                if self._stopping and not self._ready and not self._delayed and not self._retries:
                    return None
                timeout = 1.0
                if self._ready:
                    timeout = min(timeout, self._batch_delay - oldest_wait)
                if self._delayed:
                    timeout = min(timeout, self._delayed[0][0] - now)
                if self._retries:
                    timeout = min(timeout, self._retries[0][0] - now)
                if self._stopping:
                    timeout = min(timeout, self._stop_deadline - now)
                self._condition.wait(max(timeout, 0.001))

    def _envelope(self, batch: list[_Update]) -> bytes:
        """Meta's notification for ``batch``: one change per business number and kind."""
        values: dict[tuple[str, str], dict[str, Any]] = {}
        for update in batch:
            value = values.get((update.phone_number_id, update.kind))
            if value is None:
                value = values[(update.phone_number_id, update.kind)] = {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": self._display_numbers.get(update.phone_number_id, ""),
                        "phone_number_id": update.phone_number_id,
                    },
                }
            if update.kind == "messages":
                value.setdefault("contacts", []).append(update.contact)
            value.setdefault(update.kind, []).append(update.item)
            if update.kind == "statuses" and self._on_status is not None:
                status = update.item
                self._on_status(
                    status["id"], status["status"], float(status["timestamp"]), list(status.get("errors", []))
                )
        envelope = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": self._waba_id,
                    "changes": [{"value": value, "field": "messages"} for value in values.values()],
                }
            ],
        }
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()

    def _run(self) -> None:
        while (post := self._next_post()) is not None:
            try:
                delivered = self._post(post)
            except Exception as exc:  # noqa: BLE001 - the posting thread must outlive any surprise
                logger.error("whatsapp_sim.webhook_post_crashed", error=type(exc).__name__)  # noqa: TRY400
                delivered = False
            with self._condition:
                self._in_flight -= post.updates
                post.tries += 1
                if delivered:
                    self.counts["posts"] += 1
                    self.counts["updates"] += post.updates
                    if post.tries > 1:
                        self.counts["redelivered"] += 1
                elif post.tries >= self._max_tries:
                    self.counts["dropped"] += post.updates
                    logger.warning("whatsapp_sim.webhook_dropped", updates=post.updates, tries=post.tries)
                else:
                    self.counts["retries"] += 1
                    backoff = min(RETRY_MAX_SECONDS, self._retry_base * 2 ** (post.tries - 1))
                    heapq.heappush(self._retries, (time.monotonic() + backoff, next(self._sequence), post))
                    self._condition.notify()

    def _post(self, post: _Post) -> bool:
        """One POST of ``post.body``; True when answered 2xx."""
        request = urllib.request.Request(  # noqa: S310 - the URL was checked to be http on loopback
            self.url,
            data=post.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "facebookexternalua",
                SIGNATURE_HEADER: hub_signature(self._app_secret, post.body),
            },
        )
        try:
            with self._opener.open(request, timeout=POST_TIMEOUT_SECONDS) as response:
                response.read(MAX_ANSWER_BYTES)
                return True
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            logger.info("whatsapp_sim.webhook_not_accepted", status=status, updates=post.updates, tries=post.tries + 1)
            return False
        except (OSError, ValueError) as exc:
            logger.info("whatsapp_sim.webhook_post_failed", error=type(exc).__name__, updates=post.updates)
            return False
