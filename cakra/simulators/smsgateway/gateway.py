"""``SmsGateway``: the Messages endpoint's behaviour, the store, the callbacks and the pages, run together."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

import structlog
from django.conf import settings

from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.magic import Magic, magic_for
from cakra.simulators.smsgateway import web
from cakra.simulators.smsgateway.callbacks import API_VERSION, CallbackReporter, callback_params, callback_url_allowed
from cakra.simulators.smsgateway.server import IDLE_TIMEOUT_SECONDS, Answer, SendRequest, WebServer, twilio_error
from cakra.simulators.smsgateway.store import GatewayMessage, MessageStore

logger = structlog.get_logger(__name__)

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# An alphanumeric sender ID (up to 11 characters, at least one letter) or a number.
SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ._-]{1,11}")
MAX_BODY_CHARACTERS = 1600
UNDELIVERABLE_ERROR = 30003  # Twilio: unreachable destination handset
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


def segments(body: str) -> int:
    """How many SMS segments ``body`` takes: GSM-7 (160, or 153 each when
    concatenated; the extension characters count twice), else UCS-2 (70 / 67)."""
    if all(char in GSM7 or char in GSM7_EXTENDED for char in body):
        length = sum(2 if char in GSM7_EXTENDED else 1 for char in body)
        single, multi = 160, 153
    else:
        length = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if length <= single else -(-length // multi)


# What the magic numbers that are refused at once are answered (cakra.simulators.magic).
_MAGIC_REFUSALS: dict[Magic, Callable[[], Answer]] = {
    Magic.TEMPORARY: lambda: twilio_error(503, 20503, "Service unavailable"),
    # The number is a valid mobile number, so not 21211 (invalid "To"): the
    # permanent refusal of a real number is its owner's opt-out (replied STOP).
    Magic.PERMANENT: lambda: twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"),
    Magic.THROTTLED: lambda: twilio_error(429, 20429, "Too Many Requests", headers={"Retry-After": "1"}),
}


class _TokenBucket:
    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, last = self._tokens.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._tokens[key] = (tokens - 1 if allowed else tokens, now)
        return allowed


class SmsGateway:
    """The simulated gateway. Start with ``start()`` or ``with``; port 0 picks a free one.

    ``failure_rate``: the share of sends answered 500 (code 20500), drawn from
    ``seed``; ``latency_ms``: added before each answer; ``callback_delay_ms``:
    between acceptance and ``sent``, and again before the final status;
    ``rate_per_second``/``burst``: the account's limit (429, code 20429);
    0 turns it off; ``idle_timeout``: seconds after which an idle kept-alive
    connection is closed.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        http_port: int = 0,
        latency_ms: float = 0.0,
        failure_rate: float = 0.0,
        seed: int | None = None,
        callback_delay_ms: float = 0.0,
        rate_per_second: float = 0.0,
        burst: int = 1,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("the gateway needs an account SID and an auth token")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate
        self.callback_delay = callback_delay_ms / 1000
        self._random = random.Random(seed)  # noqa: S311 - a simulator's failure mix, not a secret
        self._random_lock = threading.Lock()
        self._limit = _TokenBucket(rate=rate_per_second, burst=max(1, burst))
        self.store = MessageStore()
        self.callbacks = CallbackReporter(auth_token=auth_token, on_status=self._status_changed)
        self._requested_port = http_port
        self._idle_timeout = idle_timeout
        self._web: WebServer | None = None

    @classmethod
    def from_settings(cls, *, http_port: int | None = None) -> SmsGateway:
        options: Mapping[str, Any] = settings.CAKRA_SMS_GATEWAY_SIM
        seed = options.get("SEED")
        return cls(
            account_sid=str(options["ACCOUNT_SID"]),
            auth_token=str(options["AUTH_TOKEN"]),
            http_port=int(options["HTTP_PORT"]) if http_port is None else http_port,
            latency_ms=float(options.get("LATENCY_MS", 0)),
            failure_rate=float(options.get("FAILURE_RATE", 0)),
            seed=None if seed is None else int(seed),
            callback_delay_ms=float(options.get("CALLBACK_DELAY_MS", 0)),
            rate_per_second=float(options.get("RATE_PER_SECOND", 0)),
            burst=int(options.get("BURST", 1)),
        )

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> Self:
        self._web = WebServer(
            port=self._requested_port,
            credentials=lambda: (self.account_sid, self._auth_token),
            send=self.send,
            page=self._page,
            idle_timeout=self._idle_timeout,
        )
        self._web.start()
        self.callbacks.start()
        return self

    def stop(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None
        self.callbacks.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._web is None:
            raise RuntimeError("the gateway is not running")
        return self._web.port

    @property
    def base_url(self) -> str:
        """What the adapter's ``BASE_URL`` option names."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (one per client that keeps its connection alive)."""
        return self._web.http.connections if self._web is not None else 0

    def received(self) -> int:
        return self.store.count()

    # --- the Messages endpoint ------------------------------------------------------------
    def send(self, request: SendRequest) -> Answer:
        """Answer one authenticated ``POST …/Messages.json``."""
        if self.latency:
            time.sleep(self.latency)
        form = request.form
        if any(len(values) > 1 for values in form.values()):
            return twilio_error(400, 20001, "A parameter was given more than once")
        fields = {name: values[0] for name, values in form.items()}
        to, sender, body = fields.get("To", ""), fields.get("From", ""), fields.get("Body", "")
        callback = fields.get("StatusCallback", "")
        problem = self._problem(to=to, sender=sender, body=body, callback=callback)
        if problem is not None:
            return problem
        if not self._limit.take(request.account_sid):
            return twilio_error(429, 20429, "Too Many Requests", headers={"Retry-After": "1"})
        with self._random_lock:
            unlucky = self.failure_rate > 0 and self._random.random() < self.failure_rate
        if unlucky:
            return twilio_error(500, 20500, "An internal server error has occurred")
        behaviour = magic_for(to)
        refusal = _MAGIC_REFUSALS.get(behaviour)
        if refusal is not None:
            return refusal()
        return self._accept(to=to, sender=sender, body=body, callback=callback, behaviour=behaviour)

    @staticmethod
    def _problem(*, to: str, sender: str, body: str, callback: str) -> Answer | None:
        # Checked in Twilio's order, worded as Twilio words them, without echoing the number.
        checks = (
            (not to, 21604, "A 'To' phone number is required."),
            (not E164.fullmatch(to), 21211, "Invalid 'To' Phone Number"),
            (not sender, 21603, "A 'From' phone number is required."),
            (not (SENDER_ID.fullmatch(sender) or E164.fullmatch(sender)), 21212, "Invalid 'From' Phone Number"),
            (not body, 21602, "Message body is required."),
            (
                len(body) > MAX_BODY_CHARACTERS,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            ),
            # Twilio takes any public URL; the simulator posts to this machine only.
            (
                bool(callback) and not callback_url_allowed(callback),
                21609,
                "Invalid StatusCallback URL (the simulator posts to loopback only)",
            ),
        )
        for failed, code, text in checks:
            if failed:
                return twilio_error(400, code, text)
        return None

    def _accept(self, *, to: str, sender: str, body: str, callback: str, behaviour: Magic) -> Answer:
        now = datetime.now(UTC)
        message = GatewayMessage(
            sid=f"SM{uuid.uuid4().hex}",
            account_sid=self.account_sid,
            to=to,
            sender=sender,
            body=body,
            status_callback=callback,
            created_at=now,
            segments=segments(body),
        )
        self.store.add(message)
        final: list[tuple[str, int | None]] = [("delivered", None)]
        if behaviour == Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE:
            final = [("undelivered", UNDELIVERABLE_ERROR)]
        elif behaviour == Magic.NO_RECEIPT:
            final = []
        changes = [
            callback_params(
                sid=message.sid,
                account_sid=self.account_sid,
                sender=sender,
                to=to,
                status=status,
                error_code=error_code,
            )
            for status, error_code in [("sent", None), *final]
        ]
        self.callbacks.report(url=callback, changes=changes, delay=self.callback_delay)
        return Answer(201, _resource_json(message, now))

    def _status_changed(self, params: dict[str, str]) -> None:
        code = params.get("ErrorCode")
        self.store.status_set(params["MessageSid"], params["MessageStatus"], error_code=int(code) if code else None)

    def _page(self, path: str, query: str) -> Answer | None:
        counts = {"connections": self.connections, **dict(self.callbacks.counts)}
        return web.page(self.store, path, query, counts=counts)


def _resource_json(message: GatewayMessage, now: datetime) -> bytes:
    stamp = format_datetime(now, usegmt=True)
    uri = f"/{API_VERSION}/Accounts/{message.account_sid}/Messages/{message.sid}"
    resource = {
        "account_sid": message.account_sid,
        "api_version": API_VERSION,
        "body": message.body,
        "date_created": stamp,
        "date_sent": None,
        "date_updated": stamp,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": message.sender,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": str(message.segments),
        "price": None,
        "price_unit": "USD",
        "sid": message.sid,
        "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": message.to,
        "uri": f"{uri}.json",
    }
    return json.dumps(resource).encode()
