"""SMS through an HTTP gateway in the Twilio style (the second SMS adapter, beside SMPP).

One message is one request, in Twilio's wire format::

    POST {BASE_URL}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json
    Authorization: Basic base64(ACCOUNT_SID:AUTH_TOKEN)
    Content-Type: application/x-www-form-urlencoded

    To=%2B6281234567890&From=ETLE-PMJ&Body=...&StatusCallback=https%3A%2F%2F...

answered ``201`` with the message resource as JSON, whose ``sid`` ("SM…") is
the provider reference the status callbacks (:mod:`cakra.api.sms_callbacks`)
are matched on.

Options (the ``OPTIONS`` of a ``CAKRA_PROVIDERS`` entry): ``BASE_URL``
(``https://api.twilio.com``, or the simulator's ``http://127.0.0.1:8027``),
``ACCOUNT_SID``, ``AUTH_TOKEN`` (written ``AUTH_TOKEN_ENV``: the name of the
variable holding it, see :mod:`~cakra.delivery.channels.provider_settings`),
``STATUS_CALLBACK_URL`` (our callback endpoint as the gateway must call it;
without it the gateway reports nothing and the plan's cut-off decides) and
``TIMEOUT`` seconds.

**Connections.** Each thread keeps one HTTP/1.1 connection to the gateway
open (keep-alive) across the messages of a batch and the batches after it,
as the SMTP adapter keeps its session: a TCP (and TLS) handshake per message
would cost more than the message. A kept connection the gateway closed while
idle is noticed on the next request, which goes once more on a new one.

**Answers** (Twilio's error codes, https://www.twilio.com/docs/api/errors):

- 429, or error code 20429: throttled, for the ``Retry-After`` the gateway names.
- 400 with 21211 (invalid "To"), 21408 (region not enabled), 21610
  (recipient unsubscribed, replied STOP), 21612 (cannot route to this
  number), 21614 (not a mobile number): permanent for this recipient; the
  plan moves on.
- 401/403 (credentials refused, account suspended), 404 (no such account)
  and the sender-ID or callback-URL errors (21212, 21603, 21606, 21609):
  our configuration is wrong, so every message would fail the same way:
  unavailable (retryable, the batch stops, and the failing provider is
  routed around by the health check) rather than failing a citizen's notice
  for our mistake. Logged at error level, without the token.
- 5xx, other 4xx: retryable.
- Connection refused, reset or timed out: unavailable.

Errors carry the status and code only: Twilio's ``message`` quotes the number.

**Idempotency.** Twilio's Messages API has none: there is no client
reference it would deduplicate on. A request whose answer is lost (a
timeout after the request went out, a connection dropped before the
answer) may have been accepted, and its retry sends the SMS a second time.
The sending service's accepted-note (written as each 201 arrives) keeps a
recorded acceptance from being sent again; only that narrow window remains,
and the simulator's ``/_sim/received.json`` counts copies so the benchmark
can see it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import ssl
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

import structlog

from cakra.delivery.channels.base import (
    ChannelAdapter,
    OutboundMessage,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.phone import mobile_e164
from cakra.security.identifiers import ascii_int_parse

logger = structlog.get_logger(__name__)

API_VERSION = "2010-04-01"
# Account SIDs go into the request path: letters and digits only (Twilio's are "AC" + 32 hex).
ACCOUNT_SID_PATTERN = re.compile(r"[A-Za-z0-9]{2,64}")
# What a message SID must look like to be kept as a provider reference (the column is 128).
MESSAGE_SID_PATTERN = re.compile(r"[A-Za-z0-9]{2,64}")
MAX_ANSWER_BYTES = 64 * 1024
THROTTLE_RETRY_AFTER_SECONDS = 1.0
MAX_RETRY_AFTER_SECONDS = 3600.0
USER_AGENT = "cakra-sms-http/1"

THROTTLED_CODE = 20429
PERMANENT_CODES: Mapping[int, str] = {
    21211: "invalid recipient",
    21408: "region not enabled",
    21610: "recipient unsubscribed",
    21612: "cannot route to recipient",
    21614: "recipient is not a mobile number",
}
# Errors of our configuration, not of the message: every message would fail alike.
CONFIGURATION_CODES: Mapping[int, str] = {
    21212: "invalid sender ID",
    21603: "sender ID missing",
    21606: "sender ID not usable",
    21609: "invalid status callback URL",
}
CONFIGURATION_STATUSES: Mapping[int, str] = {
    401: "credentials refused",
    403: "account forbidden",
    404: "account not found",
}
_CONNECTION_LOST = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@dataclass(slots=True)
class _Connection:
    connection: http.client.HTTPConnection
    pid: int


def _connections_close_all(connections: set[http.client.HTTPConnection], lock: threading.Lock) -> None:
    with lock:
        closing = list(connections)
        connections.clear()
    for connection in closing:
        connection.close()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _url_problem(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        return f"OPTIONS[{key!r}] must be an http(s) URL"
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.password:
        return f"OPTIONS[{key!r}] must be an http(s) URL with a host and no credentials"
    if parts.fragment:
        return f"OPTIONS[{key!r}] must not have a fragment"
    return ""


def retry_after_seconds(value: str | None) -> float:
    """The ``Retry-After`` header (delay in seconds) as a bounded positive number;
    the default when absent or in the HTTP-date form (gateways send seconds)."""
    seconds = ascii_int_parse((value or "").strip())
    if seconds is None or seconds <= 0:
        return THROTTLE_RETRY_AFTER_SECONDS
    return min(float(seconds), MAX_RETRY_AFTER_SECONDS)


def _error_code(body: bytes) -> int | None:
    """Twilio's numeric ``code`` of an error answer, or None."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def gateway_answer_error(*, status: int, body: bytes, retry_after: str | None) -> ProviderError:
    """Translate a non-2xx answer into the taxonomy (status and code only: the
    gateway's message text quotes the number)."""
    code = _error_code(body)
    detail = f"sms gateway {status}" + (f" code {code}" if code is not None else "")
    if status == 429 or code == THROTTLED_CODE:  # noqa: PLR2004 - Too Many Requests
        return ThrottledProviderError(f"{detail} (rate limited)", retry_after=retry_after_seconds(retry_after))
    if code is not None and code in PERMANENT_CODES:
        return PermanentProviderError(f"{detail} ({PERMANENT_CODES[code]})")
    reason = CONFIGURATION_CODES.get(code, "") if code is not None else ""
    reason = reason or CONFIGURATION_STATUSES.get(status, "")
    if reason:
        return UnavailableProviderError(f"{detail} ({reason}: check the provider's configuration)")
    return RetryableProviderError(detail)


class HttpSmsAdapter(ChannelAdapter):
    channel: ClassVar[str] = "sms"
    provider: ClassVar[str] = "sms-http"

    required_options: ClassVar[tuple[str, ...]] = ("BASE_URL", "ACCOUNT_SID", "AUTH_TOKEN")

    def __init__(self, *, options: Mapping[str, Any], name: str = "") -> None:
        super().__init__(options=options, name=name)
        base = urlsplit(str(options["BASE_URL"]))
        self.scheme = base.scheme
        self.host = str(base.hostname)
        self.port = base.port
        self.account_sid = str(options["ACCOUNT_SID"])
        self.path = f"{base.path.rstrip('/')}/{API_VERSION}/Accounts/{quote(self.account_sid)}/Messages.json"
        self.status_callback_url = str(options.get("STATUS_CALLBACK_URL") or "")
        self.timeout = float(options.get("TIMEOUT", 10))
        credentials = f"{self.account_sid}:{options['AUTH_TOKEN']}".encode()
        self._headers = {
            "Authorization": f"Basic {base64.b64encode(credentials).decode('ascii')}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        # Built once: loading the CA bundle costs more than a request to a nearby gateway.
        self._tls_context = ssl.create_default_context() if self.scheme == "https" else None
        # One connection per thread (an instance serves all of a process's
        # threads; http.client connections are not thread-safe), all listed
        # so that close() can end them.
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._open_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _connections_close_all, self._open, self._open_lock)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = super().check_options(options)
        if problems:
            return problems
        if problem := _url_problem("BASE_URL", options["BASE_URL"]):
            problems.append(problem)
        elif urlsplit(options["BASE_URL"]).query:
            problems.append("OPTIONS['BASE_URL'] must not have a query")
        else:
            try:
                urlsplit(options["BASE_URL"]).port  # noqa: B018 - raises on a port out of range
            except ValueError:
                problems.append("OPTIONS['BASE_URL'] has an invalid port")
        sid = options["ACCOUNT_SID"]
        if not isinstance(sid, str) or not ACCOUNT_SID_PATTERN.fullmatch(sid):
            problems.append("OPTIONS['ACCOUNT_SID'] must be 2-64 letters and digits")
        token = options["AUTH_TOKEN"]
        if not isinstance(token, str) or not token or not token.isprintable():
            problems.append("OPTIONS['AUTH_TOKEN'] must be a non-empty string (set it with AUTH_TOKEN_ENV)")
        callback = options.get("STATUS_CALLBACK_URL", "")
        if callback and (problem := _url_problem("STATUS_CALLBACK_URL", callback)):
            problems.append(problem)
        timeout = options.get("TIMEOUT", 10)
        if not _is_number(timeout) or timeout <= 0:
            problems.append("OPTIONS['TIMEOUT'] must be a positive number of seconds")
        return problems

    # --- sending -----------------------------------------------------------------
    def _send(self, message: OutboundMessage) -> str:
        recipient = mobile_e164(message.recipient)  # before any I/O
        fields = {"To": recipient, "From": message.sender.address, "Body": message.text}
        if self.status_callback_url:
            fields["StatusCallback"] = self.status_callback_url
        body = urlencode(fields).encode("ascii")
        try:
            status, answer, retry_after = self._post(body)
        except TimeoutError:
            # Sent or not, the gateway did not answer in time: it is hanging,
            # and the next message would wait as long.
            raise UnavailableProviderError("sms gateway timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            # `from None`: the chained text could hold the request; the type is enough.
            raise UnavailableProviderError(f"sms gateway connection failed: {type(exc).__name__}") from None
        if status in {200, 201}:
            return self._message_sid(answer)
        error = gateway_answer_error(status=status, body=answer, retry_after=retry_after)
        if status in CONFIGURATION_STATUSES or _error_code(answer) in CONFIGURATION_CODES:
            logger.error("sms_http.configuration_refused", provider=self.name, status=status, error=error.detail)
        raise error

    @staticmethod
    def _message_sid(answer: bytes) -> str:
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = None
        sid = parsed.get("sid") if isinstance(parsed, dict) else None
        if not isinstance(sid, str) or not MESSAGE_SID_PATTERN.fullmatch(sid):
            # Maybe accepted, but with no reference receipts could match: the
            # gateway is broken; a retry is the taxonomy's only answer.
            raise RetryableProviderError("sms gateway accepted without a valid message sid")
        return sid

    def _post(self, body: bytes) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After) of one request over this thread's kept connection.

        A kept connection that the gateway closed while idle fails before any
        answer arrives (RemoteDisconnected, reset, broken pipe): the request
        goes once more on a new connection. The gateway most likely never
        read it; in the rare case it did, this is the duplicate the module
        docstring describes.
        """
        connection, reused = self._connection()
        try:
            return self._exchange(connection, body)
        except _CONNECTION_LOST:
            self._connection_drop()
            if not reused:
                raise
        except BaseException:
            self._connection_drop()
            raise
        connection, _ = self._connection()
        try:
            return self._exchange(connection, body)
        except BaseException:
            self._connection_drop()
            raise

    def _exchange(self, connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes, str | None]:
        connection.request("POST", self.path, body=body, headers=self._headers)
        response = connection.getresponse()
        answer = response.read(MAX_ANSWER_BYTES + 1)
        if len(answer) > MAX_ANSWER_BYTES or not response.isclosed():
            # Larger than any answer of this API: not read to its end, so the
            # connection cannot carry the next request.
            self._connection_drop()
            answer = answer[:MAX_ANSWER_BYTES]
        elif response.will_close:
            self._connection_drop()
        return response.status, answer, response.getheader("Retry-After")

    # --- the kept connection -----------------------------------------------------------
    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before (it may have been closed by the gateway)."""
        state: _Connection | None = getattr(self._local, "current", None)
        if state is not None and state.pid == os.getpid():
            return state.connection, state.connection.sock is not None
        if state is not None:  # inherited across a fork: the parent's socket is not ours
            self._local.current = None
        connection: http.client.HTTPConnection
        if self._tls_context is not None:
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._tls_context
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._local.current = _Connection(connection=connection, pid=os.getpid())
        with self._open_lock:
            self._open.add(connection)
        return connection, False

    def _connection_drop(self) -> None:
        state: _Connection | None = getattr(self._local, "current", None)
        if state is None:
            return
        self._local.current = None
        with self._open_lock:
            self._open.discard(state.connection)
        if state.pid == os.getpid():
            with contextlib.suppress(OSError):
                state.connection.close()

    def close(self) -> None:
        _connections_close_all(self._open, self._open_lock)
        self._local = threading.local()
