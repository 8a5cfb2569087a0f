"""Status callbacks of an HTTP SMS gateway in the Twilio style.

``POST /api/v1/receipts/sms/{name}``, one form-encoded status change per
request, as Twilio posts it to a message's ``StatusCallback``::

    MessageSid=SM…&MessageStatus=undelivered&ErrorCode=30003&AccountSid=AC…&To=…&From=…&ApiVersion=2010-04-01

configured in ``CAKRA_SMS_CALLBACKS = {name: {"PROVIDER": <CAKRA_PROVIDERS
name>, "AUTH_TOKEN": <the account's auth token>, "URL": <this endpoint's
public URL>}}``.

**Authentication**: ``X-Twilio-Signature``, the base64 HMAC-SHA1 under the
auth token of the URL the gateway called followed by every POST parameter's
name and value, sorted by name (:func:`cakra.security.signing.twilio_signature`),
compared in constant time. **The URL is the configured one**, the address we
gave the gateway as ``StatusCallback`` (``URL``, by default
``CAKRA_PORTAL_BASE_URL`` + this path), never one rebuilt from the request:
behind the TLS-terminating proxy the request's scheme, host and port are
whatever the proxy forwarded (``X-Forwarded-*`` believed only from trusted
proxies, ``Host`` chosen by the client within ``ALLOWED_HOSTS``), so a
rebuilt URL would either refuse genuine callbacks (http vs https, an
internal port) or accept a signature made for another address. The
configured URL is exactly what the gateway signs, whatever sits in between.

The signature covers the parsed parameters, so the body must parse before
it can be checked: a missing or malformed header is refused (401) before
anything is parsed; then a body not declared form-encoded is 415, a body
that is not strict form encoding (not UTF-8, a field without ``=``, a
repeated name) 400, a wrong signature 401 (the same answer byte for byte as
a missing one, failures rate-limited per client address), and fields that
do not fit (``MessageSid``, ``MessageStatus``, ``ErrorCode``) 422, naming
the field. Body capped at ``MAX_CALLBACK_BYTES`` (413). Nothing is stored
on any of these.

**Replays.** The callback carries no timestamp, so a captured request
cannot be refused as old; it can only be replayed as is (any change breaks
the signature), and its event id ``"{MessageStatus}:{MessageSid}"`` is
unique per provider, so a replay is a duplicate that changes nothing.

**Answers**: 200 ``{"event_id", "outcome"}`` once recorded (``applied``,
``ignored_older`` for a late or out-of-order status such as ``sent`` after
``delivered``, ``duplicate``), or ``ignored`` for ``queued`` and ``sending``
(not receipts: nothing is stored). ``sent`` → sent, ``delivered`` →
delivered, ``undelivered`` and ``failed`` → failed with the detail
``"undelivered 30003"`` (the status and Twilio's error code only; the number
never). **Unknown ``MessageSid``**: the gateway can report before the worker
has recorded the hand-over, and the callback carries no time to tell a young
report from a stray one, so the answer is always 503 with ``Retry-After``:
a gateway that retries (the simulator: a few times with backoff) finds the
reference recorded; one that does not loses only that status, which the
plan's cut-off covers. Nothing is stored.

A machine endpoint: no cookies, no session, so no CSRF token (ninja's views
are CSRF-exempt; the API key routes' ``auth=None`` twin). Logs carry the
callback name, the message SID, the status and the outcome; never the
number, the text or the token.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.http import parse_header_parameters
from ninja import Field, Router

from cakra.api.errors import error_body
from cakra.api.schemas import ApiOutput, ErrorOut
from cakra.delivery.models import DeliveryReceipt
from cakra.delivery.receipts import ReceiptReport, ReceiptResult, receipts_record
from cakra.security.denials import access_denied_log
from cakra.security.identifiers import ascii_int_parse
from cakra.security.ratelimit import AUTH_FAILURE_MESSAGE, Limit, RateLimitedError, client_address, hit
from cakra.security.signing import TWILIO_SIGNATURE_HEADER, twilio_signature

logger = structlog.get_logger(__name__)

router = Router(auth=None, tags=["receipts"])

CALLBACK_PATH = "/api/v1/receipts/sms/{name}"
# A Twilio status callback is a few hundred bytes of a dozen fields.
MAX_CALLBACK_BYTES = 8 * 1024
MAX_FIELDS = 64
# Twilio's auth tokens are 32 characters; anything shorter is a configuration error.
MIN_AUTH_TOKEN_LENGTH = 32
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# base64 of a 20-byte HMAC-SHA1.
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{27}=")
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
_ERROR_CODE = re.compile(r"[0-9]{1,6}")
UNKNOWN_REFERENCE_RETRY_AFTER_SECONDS = 5
# As the email receipts' limit (cakra.api.receipts): a client that keeps
# failing stands out and gets 429; only failures are counted.
AUTH_FAILURE_LIMIT = Limit(scope="sms-callback-auth-failure", count=30, seconds=60)
UNAUTHORIZED_MESSAGE = "a valid signature is required"

# Twilio's MessageStatus → ours; None: not a receipt (the gateway still has it).
SMS_STATUSES: Mapping[str, str | None] = {
    "queued": None,
    "sending": None,
    "sent": DeliveryReceipt.Event.SENT,
    "delivered": DeliveryReceipt.Event.DELIVERED,
    "undelivered": DeliveryReceipt.Event.FAILED,
    "failed": DeliveryReceipt.Event.FAILED,
}
_FAILURE_STATUSES = frozenset({"undelivered", "failed"})
# Compared against when the name is unknown, so that timing does not list the configured callbacks.
_DECOY_TOKEN = "decoy-" + "0" * MIN_AUTH_TOKEN_LENGTH


class SmsCallbackOut(ApiOutput):
    event_id: str = Field(description='"{MessageStatus}:{MessageSid}"; empty for an ignored status.')
    outcome: str = Field(
        description=(
            "applied (the delivery moved forward), ignored_older (stored; the delivery is already at or past it), "
            "duplicate (seen before, nothing changed), ignored (queued/sending: not a receipt, nothing stored)."
        )
    )


_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            FORM_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["MessageSid", "MessageStatus"],
                    "properties": {
                        "MessageSid": {"type": "string", "pattern": f"^{_SID.pattern}$"},
                        "MessageStatus": {"type": "string", "enum": list(SMS_STATUSES)},
                        "ErrorCode": {"type": "string", "pattern": f"^{_ERROR_CODE.pattern}$"},
                    },
                    "additionalProperties": {"type": "string"},
                }
            }
        },
    },
    "security": [],
    "parameters": [
        {
            "name": TWILIO_SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "description": "base64 HMAC-SHA1(auth token, URL + each parameter's name and value, sorted by name)",
            "schema": {"type": "string"},
        }
    ],
}


class _FormError(Exception):
    """The body is not strict form encoding (answered 400)."""


def _error(status: int, *, code: str, message: str, field: str = "") -> HttpResponse:
    return JsonResponse(error_body(code=code, message=message, field=field), status=status)


def _callback(name: str) -> Mapping[str, Any] | None:
    config: Mapping[str, Any] | None = settings.CAKRA_SMS_CALLBACKS.get(name)
    if config is None:
        return None
    if len(str(config.get("AUTH_TOKEN", ""))) < MIN_AUTH_TOKEN_LENGTH:
        # A short or empty token is a configuration error, never an open door.
        logger.error("sms_callback.auth_token_too_short", callback=name)
        return None
    return config


def callback_url(name: str, config: Mapping[str, Any]) -> str:
    """The URL the gateway calls and signs: the configured one (see the module docstring)."""
    return str(config.get("URL") or f"{settings.CAKRA_PORTAL_BASE_URL}{CALLBACK_PATH.format(name=name)}")


def _form_parse(body: bytes) -> dict[str, str]:
    """Strict form encoding: UTF-8, every field ``name=value``, no name twice, not empty."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise _FormError from None
    params = dict(pairs)
    if not params or len(params) != len(pairs):  # the signature would cover both copies; we would read one
        raise _FormError
    return params


def _refuse(request: HttpRequest, *, reason: str, name: str) -> HttpResponse:
    if not hit(AUTH_FAILURE_LIMIT, client_address(request)):
        raise RateLimitedError(wait=AUTH_FAILURE_LIMIT.seconds, message=AUTH_FAILURE_MESSAGE)
    access_denied_log(request=request, surface="sms_callback", reason=reason, callback=name)
    return _error(401, code="unauthorized", message=UNAUTHORIZED_MESSAGE)


def _invalid(field: str, message: str) -> HttpResponse:
    return _error(422, code="validation_error", message=message, field=field)


def _fields_problem(params: Mapping[str, str]) -> HttpResponse | None:
    if not _SID.fullmatch(params.get("MessageSid", "")):
        return _invalid("MessageSid", "must be 2-64 letters and digits")
    if params.get("MessageStatus", "") not in SMS_STATUSES:
        return _invalid("MessageStatus", f"must be one of {', '.join(SMS_STATUSES)}")
    code = params.get("ErrorCode", "")
    if code and not _ERROR_CODE.fullmatch(code):
        return _invalid("ErrorCode", "must be 1-6 digits")
    return None


@router.post(
    "/receipts/sms/{name}",
    response={
        200: SmsCallbackOut,
        400: ErrorOut,
        401: ErrorOut,
        413: ErrorOut,
        415: ErrorOut,
        422: ErrorOut,
        429: ErrorOut,
        503: ErrorOut,
    },
    summary="SMS status callbacks from an HTTP gateway (Twilio style, signed)",
    operation_id="receipt_sms_report",
    openapi_extra=_OPENAPI,
)
def receipt_sms_report(request: HttpRequest, name: str) -> HttpResponse:
    """One status change of one message, from the gateway configured as `name`.

    Signed with `X-Twilio-Signature`. Idempotent per status and message. A
    status never moves a delivery backwards. An unknown `MessageSid` is
    answered 503 with `Retry-After`, so the gateway retries once the send
    is recorded.
    """
    started = time.monotonic()
    try:
        config, params = _authenticated(request, name)
    except _RefusedError as answer:
        return answer.response
    return _record(name=name, config=config, params=params, started=started)


class _RefusedError(Exception):
    """A refusal, answered as ``response``."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _authenticated(request: HttpRequest, name: str) -> tuple[Mapping[str, Any], dict[str, str]]:
    """The callback's configuration and its checked parameters; raises _RefusedError for anything else."""
    declared = ascii_int_parse(request.META.get("CONTENT_LENGTH") or "")
    if declared is not None and declared > MAX_CALLBACK_BYTES:
        raise _RefusedError(_too_large())  # refused before reading the body
    body = request.body
    if len(body) > MAX_CALLBACK_BYTES:
        raise _RefusedError(_too_large())
    config = _callback(name)
    # The path is the caller's text: only a configured name is logged.
    logged_name = name if name in settings.CAKRA_SMS_CALLBACKS else "(unknown)"
    signature = request.headers.get(TWILIO_SIGNATURE_HEADER, "")
    if not _SIGNATURE.fullmatch(signature):
        reason = "missing_signature" if not signature else "malformed_signature"
        raise _RefusedError(_refuse(request, reason=reason, name=logged_name))
    media_type, _ = parse_header_parameters(str(request.META.get("CONTENT_TYPE") or ""))
    if media_type != FORM_MEDIA_TYPE:
        message = f"the body must be sent as {FORM_MEDIA_TYPE}"
        raise _RefusedError(_error(415, code="unsupported_media_type", message=message))
    try:
        params = _form_parse(body)
    except _FormError:
        message = "the body is not valid form encoding"
        raise _RefusedError(_error(400, code="malformed_form", message=message, field="body")) from None
    expected = twilio_signature(
        auth_token=str(config["AUTH_TOKEN"]) if config else _DECOY_TOKEN,
        url=callback_url(name, config) if config else CALLBACK_PATH,
        params=params,
    )
    matched = hmac.compare_digest(signature.encode(), expected.encode())
    if config is None or not matched:
        reason = "unknown_callback" if config is None else "wrong_signature"
        raise _RefusedError(_refuse(request, reason=reason, name=logged_name))
    problem = _fields_problem(params)
    if problem is not None:
        raise _RefusedError(problem)
    return config, params


def _record(*, name: str, config: Mapping[str, Any], params: Mapping[str, str], started: float) -> HttpResponse:
    sid, status = params["MessageSid"], params["MessageStatus"]
    event = SMS_STATUSES[status]
    if event is None:
        _log(name=name, sid=sid, status=status, outcome="ignored", started=started)
        return JsonResponse({"event_id": "", "outcome": "ignored"})
    code = params.get("ErrorCode", "")
    event_id = f"{status}:{sid}"
    [outcome] = receipts_record(
        provider=str(config["PROVIDER"]),
        reports=[
            ReceiptReport(
                provider_reference=sid,
                event=event,
                # The callback carries no time: it is reported as it happens.
                occurred_at=timezone.now(),
                event_id=event_id,
                detail=f"{status} {code}".strip() if status in _FAILURE_STATUSES else "",
            )
        ],
    )
    _log(name=name, sid=sid, status=status, outcome=outcome.result.value, started=started)
    if outcome.result == ReceiptResult.UNKNOWN_REFERENCE:
        response = _error(503, code="unknown_reference", message="no delivery has this MessageSid yet; retry later")
        response["Retry-After"] = str(UNKNOWN_REFERENCE_RETRY_AFTER_SECONDS)
        return response
    return JsonResponse({"event_id": event_id, "outcome": outcome.result.value})


def _too_large() -> HttpResponse:
    return _error(413, code="request_too_large", message="the request body is too large", field="body")


def _log(*, name: str, sid: str, status: str, outcome: str, started: float) -> None:
    logger.info(
        "sms_callback.received",
        callback=name,
        message_sid=sid,
        status=status,
        outcome=outcome,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
