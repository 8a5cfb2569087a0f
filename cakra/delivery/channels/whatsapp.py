"""WhatsApp over Meta's Cloud API (Graph API ``/{phone-number-id}/messages``).

Options (the ``OPTIONS`` of a ``CAKRA_PROVIDERS`` entry): ``BASE_URL``
(``https://graph.facebook.com``; the simulator's ``http://127.0.0.1:8025`` in
development), ``API_VERSION`` (``v21.0``), ``ACCESS_TOKEN`` (a system user's
token; in ``CAKRA_PROVIDERS_JSON`` always written ``"ACCESS_TOKEN_ENV":
"<variable name>"``, see provider_settings.py) and ``TIMEOUT`` seconds.

Plain ``http`` is accepted for a loopback host only: the request carries the
bearer token and a citizen's number, which may cross a network only inside
TLS, while a simulator on the same machine has no certificate to offer.

A message is a pre-approved template (``message.template``) or, for an
answer inside the customer's 24-hour window, free-form text. The delivery
id travels as ``biz_opaque_callback_data`` (Meta echoes it in status
webhooks), and the answer's ``messages[0].id`` (the ``wamid``) is the
reference receipts are matched on.

One keep-alive HTTP connection per process and thread carries a whole batch
(and the next one, until it idles out): a TCP and TLS handshake per message
would cost more than the message. A kept connection the server closed is
found out on the next request, which is sent once more on a new connection.

Errors are mapped from Meta's envelope ``{"error": {"code": …}}`` by code
(the HTTP status only when there is no envelope); the stored detail is ours,
``"whatsapp <code> <what it means>"``, never Meta's text (it can quote the
number or the parameters).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

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

API_VERSION_PATTERN = re.compile(r"v[0-9]{1,3}\.[0-9]{1,2}")
# A phone-number id is a Graph API object id: digits. Anything else in the
# path would address another endpoint.
PHONE_NUMBER_ID_PATTERN = re.compile(r"[0-9]{1,32}")
# Printable ASCII without spaces: nothing that could end the header line.
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]{1,4096}")
# The reference is stored in a 128-character column and matched on by receipts.
WAMID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
LOOPBACK_NAMES = frozenset({"localhost"})
MAX_ANSWER_BYTES = 64 * 1024
CONNECTION_IDLE_SECONDS = 30.0
DEFAULT_TIMEOUT = 10.0

# --- Meta's error codes (developers.facebook.com, Cloud API error codes) ------------
# Throttling codes → (what it means, the wait when none is given, whether a
# Retry-After header is honoured).
THROTTLE_CODES: dict[int, tuple[str, float, bool]] = {
    # Cloud API throughput of the number (80 messages/s by default).
    130429: ("throughput limit", 5.0, True),
    # Too many messages from this number were blocked or reported
    # (quality-based limits): a longer pause.
    131048: ("spam rate limit", 60.0, False),
    # The pair rate: too many messages to one recipient in a short time. It
    # concerns one citizen, not the number, so the pause the whole sender
    # identity takes for it stays short.
    131056: ("pair rate limit", 2.0, False),
    # Graph API call-rate limits (application, business account).
    4: ("api call limit", 30.0, True),
    80007: ("api call limit", 30.0, True),
}
THROUGHPUT_RETRY_AFTER_SECONDS = THROTTLE_CODES[130429][1]
PERMANENT_CODES: dict[int, str] = {
    100: "invalid parameter",
    131026: "undeliverable",
    131047: "outside the customer window",
    131051: "unsupported message type",
}
TEMPLATE_CODES = range(132000, 133000)  # template missing, paused, parameters wrong…
ACCESS_TOKEN_CODE = 190
SERVICE_UNAVAILABLE = 131000

HTTP_UNAUTHORIZED = 401
HTTP_TOO_MANY_REQUESTS = 429
HTTP_OK_CLASS = range(200, 300)


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url_problems(value: object) -> list[str]:  # noqa: PLR0911 - one answer per problem
    if not isinstance(value, str) or not value:
        return ["OPTIONS['BASE_URL'] must be a URL such as https://graph.facebook.com"]
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return ["OPTIONS['BASE_URL'] is not a valid URL"]
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return ["OPTIONS['BASE_URL'] must be an http(s) URL with a host"]
    if parts.query or parts.fragment or parts.username or parts.password:
        return ["OPTIONS['BASE_URL'] must not carry a query, fragment or credentials"]
    if port == 0:
        return ["OPTIONS['BASE_URL'] has an invalid port"]
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return ["OPTIONS['BASE_URL'] must use https unless the host is loopback (a local simulator)"]
    return []


def _retry_after_header(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by Graph)."""
    seconds = ascii_int_parse((value or "").strip())
    return float(seconds) if seconds else None


def cloud_api_error(*, status: int, body: bytes, retry_after: str | None = None) -> ProviderError:
    """Translate a Cloud API error answer into the taxonomy.

    Meta's ``error.code`` decides; the HTTP status only when the body holds no
    envelope (a proxy's page, an empty answer). Only the code is kept.
    """
    code = _error_code(body)
    if code is None:
        return _status_error(status, retry_after)
    detail = f"whatsapp {code}"
    if code in THROTTLE_CODES:
        meaning, default_wait, honours_header = THROTTLE_CODES[code]
        wait = (_retry_after_header(retry_after) if honours_header else None) or default_wait
        return ThrottledProviderError(f"{detail} {meaning}", retry_after=wait)
    if code in PERMANENT_CODES or code in TEMPLATE_CODES:
        return PermanentProviderError(f"{detail} {PERMANENT_CODES.get(code, 'template or parameter refused')}")
    if code == ACCESS_TOKEN_CODE or status == HTTP_UNAUTHORIZED:
        # Every message would be refused the same way until the token is fixed.
        return UnavailableProviderError(f"{detail} access token refused")
    if code == SERVICE_UNAVAILABLE:
        return RetryableProviderError(f"{detail} service unavailable")
    return RetryableProviderError(f"{detail} (http {status})")


def _error_code(body: bytes) -> int | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _status_error(status: int, retry_after: str | None) -> ProviderError:
    detail = f"whatsapp http {status}"
    if status == HTTP_TOO_MANY_REQUESTS:
        return ThrottledProviderError(
            detail, retry_after=_retry_after_header(retry_after) or THROUGHPUT_RETRY_AFTER_SECONDS
        )
    if status == HTTP_UNAUTHORIZED:
        return UnavailableProviderError(f"{detail} access token refused")
    return RetryableProviderError(detail)


def _wamid(body: bytes) -> str:
    try:
        parsed = json.loads(body)
        wamid = parsed["messages"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        wamid = None
    if not isinstance(wamid, str) or not WAMID_PATTERN.fullmatch(wamid):
        # Accepted or not, we cannot tell; a retry is the safer guess.
        raise RetryableProviderError("whatsapp answer without a message id")
    return wamid


def message_payload(message: OutboundMessage, *, to: str) -> dict[str, Any]:
    """The JSON body of ``POST /{phone-number-id}/messages`` for ``message``."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.removeprefix("+"),
    }
    template = message.template
    if template is None:
        # Free-form: allowed only inside the customer's 24-hour window
        # (an answer to an inbound message). No link preview: the citizen
        # sees the official domain as text, not a card fetched from it.
        payload["type"] = "text"
        payload["text"] = {"body": message.text, "preview_url": False}
    else:
        call: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        if template.parameters:
            call["components"] = [
                {"type": "body", "parameters": [{"type": "text", "text": value} for value in template.parameters]}
            ]
        payload["type"] = "template"
        payload["template"] = call
    # Echoed by Meta in the status webhooks of this message.
    payload["biz_opaque_callback_data"] = message.reference
    return payload


@dataclass
class _Connection:
    connection: http.client.HTTPConnection
    pid: int
    last: float


def _connections_close_all(open_connections: set[http.client.HTTPConnection], lock: threading.Lock) -> None:
    with lock:
        closing = list(open_connections)
        open_connections.clear()
    for connection in closing:
        connection.close()


class _NotAnsweredError(Exception):
    """A kept connection was found closed before the server answered."""


class WhatsAppCloudAdapter(ChannelAdapter):
    channel: ClassVar[str] = "whatsapp"
    provider: ClassVar[str] = "whatsapp-cloud"

    required_options: ClassVar[tuple[str, ...]] = ("BASE_URL", "API_VERSION", "ACCESS_TOKEN")

    def __init__(self, *, options: Mapping[str, Any], name: str = "") -> None:
        super().__init__(options=options, name=name)
        parts = urlsplit(options["BASE_URL"])
        self.scheme = parts.scheme
        self.host: str = parts.hostname or ""
        self.port = parts.port
        self.path_prefix = parts.path.rstrip("/")
        self.api_version: str = options["API_VERSION"]
        self.timeout = float(options.get("TIMEOUT", DEFAULT_TIMEOUT))
        self._authorization = f"Bearer {options['ACCESS_TOKEN']}"
        # Built once: loading the CA bundle costs more than a request.
        self._tls_context = ssl.create_default_context() if self.scheme == "https" else None
        # One connection per thread (the instance is shared by a process's
        # threads); all are listed so close() can end them.
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._open_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _connections_close_all, self._open, self._open_lock)
        self.connections_opened = 0  # for tests and diagnostics: connections made so far

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = super().check_options(options)
        if problems:
            return problems
        problems += _base_url_problems(options["BASE_URL"])
        version = options["API_VERSION"]
        if not isinstance(version, str) or not API_VERSION_PATTERN.fullmatch(version):
            problems.append("OPTIONS['API_VERSION'] must be a Graph API version such as v21.0")
        token = options["ACCESS_TOKEN"]
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            problems.append("OPTIONS['ACCESS_TOKEN'] must be a non-empty token of printable characters")
        timeout = options.get("TIMEOUT", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            problems.append("OPTIONS['TIMEOUT'] must be a positive number of seconds")
        return problems

    # --- sending ---------------------------------------------------------------------
    def _send(self, message: OutboundMessage) -> str:
        to = mobile_e164(message.recipient)  # permanent, before any I/O
        phone_number_id = message.sender.address
        if not PHONE_NUMBER_ID_PATTERN.fullmatch(phone_number_id):
            # The region's sender is misconfigured: no message from it can go.
            raise PermanentProviderError("sender is not a WhatsApp phone number id")
        path = f"{self.path_prefix}/{self.api_version}/{phone_number_id}/messages"
        body = json.dumps(message_payload(message, to=to), ensure_ascii=False, separators=(",", ":")).encode()
        status, answer, retry_after = self._post(path, body)
        if status in HTTP_OK_CLASS:
            return _wamid(answer)
        raise cloud_api_error(status=status, body=answer, retry_after=retry_after)

    def _post(self, path: str, body: bytes) -> tuple[int, bytes, str | None]:
        """POST over this thread's kept connection: (status, body, Retry-After).

        A kept connection the server has closed meanwhile (its idle timeout is
        its own) fails before any answer: the request goes once more on a new
        connection. A new connection that fails is a real failure.
        """
        connection, reused = self._connection()
        try:
            return self._exchange(connection, path, body)
        except _NotAnsweredError:
            self._connection_drop()
            if not reused:
                raise UnavailableProviderError("whatsapp connection closed before an answer") from None
        connection, _ = self._connection()
        try:
            return self._exchange(connection, path, body)
        except _NotAnsweredError:
            self._connection_drop()
            raise UnavailableProviderError("whatsapp connection closed before an answer") from None

    def _exchange(
        self, connection: http.client.HTTPConnection, path: str, body: bytes
    ) -> tuple[int, bytes, str | None]:
        headers = {
            "Authorization": self._authorization,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise _NotAnsweredError from None
        except TimeoutError:
            self._connection_drop()
            raise RetryableProviderError("whatsapp timed out waiting for an answer") from None
        except (OSError, http.client.HTTPException) as exc:
            self._connection_drop()
            # `from None`: the chained text could hold the request.
            raise UnavailableProviderError(f"whatsapp connection failed: {type(exc).__name__}") from None
        try:
            answer = response.read(MAX_ANSWER_BYTES + 1)
        except TimeoutError:
            self._connection_drop()
            raise RetryableProviderError("whatsapp timed out reading the answer") from None
        except (OSError, http.client.HTTPException) as exc:
            self._connection_drop()
            raise RetryableProviderError(f"whatsapp answer cut off: {type(exc).__name__}") from None
        if len(answer) > MAX_ANSWER_BYTES or response.will_close:
            # Unread bytes, or the server said it closes: not reusable.
            self._connection_drop()
        else:
            self._local.current.last = time.monotonic()
        return response.status, answer, response.getheader("Retry-After")

    # --- the kept connection ----------------------------------------------------------
    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection (opened when needed) and whether it was used before."""
        state: _Connection | None = getattr(self._local, "current", None)
        if state is not None:
            if state.pid == os.getpid() and time.monotonic() - state.last < CONNECTION_IDLE_SECONDS:
                return state.connection, True
            self._connection_drop()
        connection: http.client.HTTPConnection
        if self._tls_context is not None:
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._tls_context
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.connect()
        except TimeoutError:
            connection.close()
            raise UnavailableProviderError("whatsapp connection timed out") from None
        except OSError as exc:  # refused, unreachable, name not found, TLS failure
            connection.close()
            raise UnavailableProviderError(f"whatsapp connection failed: {type(exc).__name__}") from None
        with contextlib.suppress(OSError):  # small requests: do not wait to fill a segment
            if connection.sock is not None:
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections_opened += 1
        self._local.current = _Connection(connection=connection, pid=os.getpid(), last=time.monotonic())
        with self._open_lock:
            self._open.add(connection)
        return connection, False

    def _connection_drop(self) -> None:
        state: _Connection | None = getattr(self._local, "current", None)
        self._local.current = None
        if state is not None and state.pid == os.getpid():
            with self._open_lock:
                self._open.discard(state.connection)
            state.connection.close()

    def close(self) -> None:
        # The finalizer stays armed: the adapter may open a connection again.
        _connections_close_all(self._open, self._open_lock)
        self._local = threading.local()
