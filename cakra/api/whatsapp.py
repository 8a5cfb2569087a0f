"""Meta's WhatsApp webhook: status updates of the messages we sent, and what citizens send us.

One URL per configured Meta app (``CAKRA_WHATSAPP_WEBHOOKS``):
``/api/v1/webhooks/whatsapp/{name}``.

**GET** is Meta's verification handshake: ``hub.mode=subscribe``,
``hub.verify_token`` (compared in constant time with the configured
VERIFY_TOKEN) and ``hub.challenge``, echoed as ``text/plain`` when it is a
short token of letters, digits, ``.``, ``_`` or ``-`` (Meta sends digits; a
challenge is never reflected as anything a browser would render). Any other
request gets 403, and failures are rate-limited per client address.

**POST** carries ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret,
raw body)>``, checked in constant time on the raw body *before* anything is
parsed. Missing, malformed or wrong signature, unknown name: the same 401,
byte for byte, rate-limited per client address like the receipt webhook.
A replayed body (Meta itself redelivers until answered 200) changes
nothing: each status is one receipt event id ``<status>:<wamid>``, unique
per provider, and each inbound message is unique by its id.

The envelope (``object``, ``entry[].changes[].value``) is parsed strictly: a
body that is not such an envelope is 400 and nothing is stored. Inside it,
**one bad event never fails the batch**: a status or message that does not
parse is counted as ``skipped`` and the others are recorded; changes of
other webhook fields (template reviews, account updates) are counted as
``ignored_changes``.

**Answers**: 200 with counts, unless a status names a ``wamid`` no delivery
has yet and is less than ten minutes old: the provider reported faster than
the worker recorded the hand-over, so the answer is 503 with Retry-After
and Meta delivers the whole POST again (its known statuses are then
duplicates). An older unknown status was never ours: 200.

Logs carry counts, wamids' receipt outcomes by count, inbound ids: never a
number, a text or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import Router
from ninja.errors import HttpError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from cakra.api.body import json_content_type_check, strict_json_loads
from cakra.api.errors import error_body
from cakra.api.schemas import ErrorOut
from cakra.delivery.inbound import (
    AUTO_REPLY_REFERENCE_PREFIX,
    InboundReport,
    InboundResult,
    inbound_messages_record,
)
from cakra.delivery.models import INBOUND_TEXT_MAX_LENGTH, DeliveryReceipt
from cakra.delivery.receipts import ReceiptReport, ReceiptResult, receipts_record
from cakra.security.denials import access_denied_log
from cakra.security.identifiers import ascii_int_parse
from cakra.security.ratelimit import AUTH_FAILURE_MESSAGE, Limit, RateLimitedError, client_address, hit

logger = structlog.get_logger(__name__)

router = Router(auth=None, tags=["webhooks"])

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")
MAX_SIGNATURE_HEADER_LENGTH = 256
# Meta's app secrets are 32 hexadecimal characters; shorter is a configuration error.
MIN_SECRET_LENGTH = 32
MIN_VERIFY_TOKEN_LENGTH = 16
_CHALLENGE = re.compile(r"[0-9A-Za-z._-]{1,128}")
# As the receipt webhook: a client that keeps failing stands out and is answered 429.
AUTH_FAILURE_LIMIT = Limit(scope="whatsapp-webhook-auth-failure", count=30, seconds=60)
UNAUTHORIZED_MESSAGE = "a valid signature is required"
FORBIDDEN_MESSAGE = "verification refused"
# A status about a wamid we do not know yet, younger than this, may have
# raced our record of the send: ask Meta to deliver the POST again.
UNKNOWN_REFERENCE_GRACE = timedelta(minutes=10)
UNKNOWN_REFERENCE_RETRY_AFTER_SECONDS = 30
# Printable ASCII without spaces: wamids and message ids.
REFERENCE_PATTERN = r"^[\x21-\x7e]{1,128}$"
# Unix seconds; ten digits reach the year 2286.
TIMESTAMP_PATTERN = r"^[0-9]{1,10}$"
MAX_TITLE_INPUT = 500

# Meta's statuses → ours (cakra.delivery.states: read implies delivered).
STATUS_EVENTS: dict[str, str] = {
    "sent": DeliveryReceipt.Event.SENT,
    "delivered": DeliveryReceipt.Event.DELIVERED,
    "read": DeliveryReceipt.Event.READ,
    "failed": DeliveryReceipt.Event.FAILED,
}


# --- configuration and authentication --------------------------------------------------
def _webhook(name: str) -> Mapping[str, Any] | None:
    config: Mapping[str, Any] | None = settings.CAKRA_WHATSAPP_WEBHOOKS.get(name)
    if config is None:
        return None
    if (
        len(config.get("APP_SECRET", "")) < MIN_SECRET_LENGTH
        or len(config.get("VERIFY_TOKEN", "")) < MIN_VERIFY_TOKEN_LENGTH
    ):
        # A short or empty secret is a configuration error, never an open door.
        logger.error("whatsapp_webhook.secret_too_short", webhook=name)
        return None
    return config


# Compared against when the name is unknown, so an unknown name costs the same
# work as a known one and timing does not list the configured webhooks.
_DECOY_SECRET = "decoy-" + "0" * MIN_SECRET_LENGTH


def whatsapp_signature(*, secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signature_problem(header: str, *, secret: str, body: bytes) -> str:
    """What is wrong with ``header`` ("" when it signs ``body``), for the log only."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not header:
        return "missing_signature"
    match = _SIGNATURE.fullmatch(header) if len(header) <= MAX_SIGNATURE_HEADER_LENGTH else None
    if match is None:
        return "malformed_signature"
    return "" if hmac.compare_digest(match.group(1), expected) else "wrong_signature"


def _name_for_log(name: str) -> str:
    # The path is the caller's text: only a configured name is logged.
    return name if name in settings.CAKRA_WHATSAPP_WEBHOOKS else "(unknown)"


def _error(status: int, *, code: str, message: str, field: str = "") -> HttpResponse:
    return JsonResponse(error_body(code=code, message=message, field=field), status=status)


def _refuse(request: HttpRequest, *, status: int, reason: str, name: str) -> HttpResponse:
    if not hit(AUTH_FAILURE_LIMIT, client_address(request)):
        raise RateLimitedError(wait=AUTH_FAILURE_LIMIT.seconds, message=AUTH_FAILURE_MESSAGE)
    access_denied_log(request=request, surface="whatsapp_webhook", reason=reason, webhook=_name_for_log(name))
    if status == 403:  # noqa: PLR2004 - the handshake's refusal
        return _error(403, code="forbidden", message=FORBIDDEN_MESSAGE)
    return _error(401, code="unauthorized", message=UNAUTHORIZED_MESSAGE)


# --- schemas ---------------------------------------------------------------------------------
# Unknown fields are ignored (Meta adds fields over time: pricing, conversation,
# user ids); only what is read here is checked, and none of the rest is stored.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Metadata(_Strict):
    phone_number_id: str = Field(pattern=r"^[0-9]{1,32}$")


class _Value(_Strict):
    metadata: _Metadata | None = None
    # Items are checked one by one below, so one bad item does not fail the rest.
    statuses: list[Any] = Field(default_factory=list)
    messages: list[Any] = Field(default_factory=list)


class _Change(_Strict):
    field: str = Field(max_length=64)
    value: _Value


class _Entry(_Strict):
    id: str = Field(max_length=64)
    changes: list[_Change]


class WhatsAppEnvelopeIn(_Strict):
    object: Literal["whatsapp_business_account"]
    entry: list[_Entry] = Field(min_length=1)


class _StatusError(_Strict):
    code: int
    title: str = Field(default="", max_length=MAX_TITLE_INPUT)


class WhatsAppStatusIn(_Strict):
    id: str = Field(pattern=REFERENCE_PATTERN)
    status: Literal["sent", "delivered", "read", "failed"]
    timestamp: str = Field(pattern=TIMESTAMP_PATTERN)
    errors: list[_StatusError] = Field(default_factory=list, max_length=20)
    # What we sent as biz_opaque_callback_data: a delivery id, or an answer's reference.
    biz_opaque_callback_data: str = Field(default="", max_length=512)


class _Text(_Strict):
    body: str = Field(max_length=INBOUND_TEXT_MAX_LENGTH)


class WhatsAppMessageIn(_Strict):
    sender: str = Field(alias="from", pattern=r"^[0-9]{6,15}$")
    id: str = Field(pattern=REFERENCE_PATTERN)
    timestamp: str = Field(pattern=TIMESTAMP_PATTERN)
    type: str = Field(max_length=32)
    text: _Text | None = None


_ENVELOPE = TypeAdapter(WhatsAppEnvelopeIn)
_STATUS = TypeAdapter(WhatsAppStatusIn)
_MESSAGE = TypeAdapter(WhatsAppMessageIn)


def _unix(timestamp: str) -> datetime:
    return datetime.fromtimestamp(int(timestamp), tz=UTC)


def _receipt(item: WhatsAppStatusIn) -> ReceiptReport:
    detail = ""
    if item.status == "failed" and item.errors:
        first = item.errors[0]
        detail = f"{first.code} {first.title}".strip()  # cleaned by receipts_record
    return ReceiptReport(
        provider_reference=item.id,
        event=STATUS_EVENTS[item.status],
        occurred_at=_unix(item.timestamp),
        event_id=f"{item.status}:{item.id}",
        detail=detail,
    )


def _inbound(item: WhatsAppMessageIn, *, phone_number_id: str) -> InboundReport:
    return InboundReport(
        provider_message_id=item.id,
        sender=f"+{item.sender}",
        business_phone_number_id=phone_number_id,
        kind=item.type,
        text=item.text.body if item.type == "text" and item.text is not None else "",
        received_at=_unix(item.timestamp),
    )


def _parse(body: bytes) -> WhatsAppEnvelopeIn:
    try:
        parsed = strict_json_loads(body)
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None  # answered as malformed_json
    try:
        return _ENVELOPE.validate_python(parsed)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        raise _EnvelopeError(".".join(str(part) for part in first["loc"])) from None


class _EnvelopeError(Exception):
    """The body is JSON but not Meta's envelope."""


def _events(envelope: WhatsAppEnvelopeIn) -> tuple[list[ReceiptReport], list[InboundReport], Counter[str]]:
    """The statuses and messages of the envelope; bad items and other fields counted, not raised."""
    reports: list[ReceiptReport] = []
    inbound: list[InboundReport] = []
    counts: Counter[str] = Counter()
    for entry in envelope.entry:
        for change in entry.changes:
            if change.field != "messages":
                counts["ignored_changes"] += 1
                continue
            for raw in change.value.statuses:
                try:
                    status = _STATUS.validate_python(raw)
                except PydanticValidationError:
                    counts["skipped"] += 1
                    continue
                if status.biz_opaque_callback_data.startswith(AUTO_REPLY_REFERENCE_PREFIX):
                    # An automatic answer's status: no delivery to move, nothing to wait for.
                    counts["answer_statuses"] += 1
                    continue
                reports.append(_receipt(status))
            metadata = change.value.metadata
            for raw in change.value.messages:
                try:
                    item = _MESSAGE.validate_python(raw)
                except PydanticValidationError:
                    counts["skipped"] += 1
                    continue
                if metadata is None:  # which official number it came to is unknown
                    counts["skipped"] += 1
                    continue
                inbound.append(_inbound(item, phone_number_id=metadata.phone_number_id))
    return reports, inbound, counts


# --- the endpoints -----------------------------------------------------------------------
@router.get(
    "/webhooks/whatsapp/{name}",
    response={200: str, 400: ErrorOut, 403: ErrorOut, 429: ErrorOut},
    summary="WhatsApp webhook verification (Meta's subscribe handshake)",
    operation_id="whatsapp_webhook_verify",
    openapi_extra={"security": []},
)
def whatsapp_webhook_verify(request: HttpRequest, name: str) -> HttpResponse:
    """Echoes `hub.challenge` as text/plain when `hub.mode` is `subscribe` and
    `hub.verify_token` is the configured token; 403 otherwise."""
    mode = request.GET.get("hub.mode", "")
    token = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    config = _webhook(name)
    expected = config["VERIFY_TOKEN"] if config else _DECOY_SECRET
    token_matches = hmac.compare_digest(token.encode(), str(expected).encode())
    if config is None or mode != "subscribe" or not token_matches:
        reason = "unknown_webhook" if config is None else "wrong_mode" if mode != "subscribe" else "wrong_token"
        return _refuse(request, status=403, reason=reason, name=name)
    if not _CHALLENGE.fullmatch(challenge):
        return _error(
            400, code="invalid_challenge", message="hub.challenge must be a short token", field="hub.challenge"
        )
    logger.info("whatsapp_webhook.verified", webhook=name)
    response = HttpResponse(challenge, content_type="text/plain; charset=utf-8")
    response["X-Content-Type-Options"] = "nosniff"
    return response


@router.post(
    "/webhooks/whatsapp/{name}",
    response={200: dict[str, int], 400: ErrorOut, 401: ErrorOut, 413: ErrorOut, 415: ErrorOut, 429: ErrorOut},
    summary="WhatsApp status updates and inbound messages (Meta's signed webhook)",
    operation_id="whatsapp_webhook_receive",
    openapi_extra={
        "security": [],
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "sha256=<hex HMAC-SHA256(app secret, raw body)>",
                "schema": {"type": "string"},
            }
        ],
        # Read raw (the signature covers the exact bytes), so declared here.
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "required": ["object", "entry"]}}},
        },
    },
)
def whatsapp_webhook_receive(request: HttpRequest, name: str) -> HttpResponse:
    """Statuses (sent, delivered, read, failed) become delivery receipts;
    messages are stored and answered automatically. Idempotent."""
    started = time.monotonic()
    max_bytes = int(settings.CAKRA_WHATSAPP_WEBHOOK_MAX_BYTES)
    declared = ascii_int_parse(request.META.get("CONTENT_LENGTH") or "")
    if (declared is not None and declared > max_bytes) or len(body := request.body) > max_bytes:
        return _error(413, code="request_too_large", message="the request body is too large", field="body")
    config = _webhook(name)
    problem = _signature_problem(
        request.headers.get(SIGNATURE_HEADER, ""), secret=config["APP_SECRET"] if config else _DECOY_SECRET, body=body
    )
    if config is None or problem:
        return _refuse(request, status=401, reason=problem or "unknown_webhook", name=name)
    json_content_type_check(request)
    try:
        envelope = _parse(body)
    except _EnvelopeError as exc:
        return _error(
            400, code="invalid_envelope", message="the body is not a WhatsApp webhook envelope", field=str(exc)
        )
    reports, inbound, counts = _events(envelope)
    provider = str(config["PROVIDER"])
    outcomes = receipts_record(provider=provider, reports=reports) if reports else []
    inbound_results = inbound_messages_record(provider=provider, reports=inbound)
    receipt_counts = Counter(outcome.result for outcome in outcomes)
    cutoff = timezone.now() - UNKNOWN_REFERENCE_GRACE
    young_unknown = sum(
        1
        for report, outcome in zip(reports, outcomes, strict=True)
        if outcome.result == ReceiptResult.UNKNOWN_REFERENCE and report.occurred_at > cutoff
    )
    answer = {
        "statuses": len(reports),
        **{result.value: receipt_counts[result] for result in ReceiptResult},
        "messages": len(inbound),
        "messages_recorded": inbound_results.count(InboundResult.RECORDED),
        "messages_duplicate": inbound_results.count(InboundResult.DUPLICATE),
        "skipped": counts["skipped"],
        "ignored_changes": counts["ignored_changes"],
        "answer_statuses": counts["answer_statuses"],
    }
    logger.info(
        "whatsapp_webhook.batch",
        webhook=name,
        **answer,
        young_unknown=young_unknown,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    if young_unknown:
        response = _error(
            503, code="unknown_reference", message="a status names a message not recorded yet; deliver again later"
        )
        response["Retry-After"] = str(UNKNOWN_REFERENCE_RETRY_AFTER_SECONDS)
        return response
    return JsonResponse(answer)
