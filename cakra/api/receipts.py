"""Signed receipt webhooks: providers tell us what became of the messages we handed them.

``POST /api/v1/receipts/email/{provider}`` takes a JSON **array** of events,
as the event webhooks of SES, SendGrid or Postmark post them (batched: up to
``CAKRA_RECEIPT_MAX_EVENTS`` per request)::

    [{"event_id": "...", "message_id": "<delivery-id@domain>", "event": "delivered",
      "timestamp": "2026-11-29T08:15:03+07:00", "detail": ""}]

**Authentication** (no API key: the caller is the provider, configured in
``CAKRA_RECEIPT_WEBHOOKS``): the header
``X-Cakra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
The timestamp must be within ``CAKRA_RECEIPT_SIGNATURE_TOLERANCE_SECONDS``
(5 minutes) of our clock, so a captured request cannot be replayed later; a
body replayed within the window changes nothing, because every event id is
unique per provider. Several ``v1=`` values may be sent (secret rotation).
Missing header, malformed header, wrong signature, stale or future
timestamp, unknown provider: the same 401, byte for byte, and failures are
rate-limited per client address.

**Answers**:

- 200 with counts per outcome and one result per event, in order.
  An event whose ``message_id`` matches no delivery is reported as
  ``unknown_reference`` among the others (the provider must not retry a
  whole batch forever for one message that was never ours; it may report
  that one event again later, e.g. when it raced our record of the send).
- 404 ``unknown_reference`` when the request holds a **single** event and its
  ``message_id`` matches no delivery: the issue asks "unknown reference →
  4xx", and for one event the status code can say it without ambiguity.
  Nothing is stored.
- 415 body not declared ``Content-Type: application/json`` (checked once the
  signature is accepted, before the body is parsed); 400 body not JSON; 422
  schema (the field is named, e.g. ``[3].timestamp``); 413 body over
  ``CAKRA_RECEIPT_MAX_BYTES``. Nothing is stored.

Logs carry event ids, delivery ids and counts, never an address or the
provider's free text.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Router
from ninja.errors import HttpError, ValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, field_validator
from pydantic import ValidationError as PydanticValidationError

from cakra.api.body import json_content_type_check, strict_json_loads
from cakra.api.errors import error_body
from cakra.api.schemas import ApiOutput, ErrorOut, iso_datetime_parse
from cakra.delivery.models import DeliveryReceipt
from cakra.delivery.receipts import ReceiptReport, ReceiptResult, receipts_record
from cakra.security.denials import access_denied_log
from cakra.security.identifiers import ascii_int_parse
from cakra.security.ratelimit import AUTH_FAILURE_MESSAGE, Limit, RateLimitedError, client_address, hit
from cakra.security.signing import SIGNATURE_HEADER, SIGNATURE_SCHEME, receipt_signature

logger = structlog.get_logger(__name__)

router = Router(auth=None, tags=["receipts"])

MAX_SIGNATURE_HEADER_LENGTH = 1024
MIN_SECRET_LENGTH = 32
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# Signatures are 256-bit HMACs, so this is not about guessing one: it makes a
# client that keeps failing stand out and answers it 429. The signature is
# checked first (an HMAC over a size-capped body) and only a failure is
# counted, so a provider sharing an egress address with a failing sender is
# never refused because of the other's failures.
AUTH_FAILURE_LIMIT = Limit(scope="receipt-auth-failure", count=30, seconds=60)
UNAUTHORIZED_MESSAGE = "a valid signature is required"
# Printable ASCII without spaces: provider ids and RFC 5322 Message-IDs.
REFERENCE_PATTERN = r"^[\x21-\x7e]{1,128}$"
MAX_DETAIL_INPUT = 1000

# The email providers' vocabulary → ours (cakra.delivery.states).
EMAIL_EVENTS: dict[str, str] = {
    "delivered": DeliveryReceipt.Event.DELIVERED,
    "opened": DeliveryReceipt.Event.READ,
    "bounced": DeliveryReceipt.Event.FAILED,
    "deferred": DeliveryReceipt.Event.DEFERRED,
}


# --- checking a signature (cakra.security.signing computes one) -------------
def receipt_signature_valid(*, header: str, secret: str, body: bytes, now: float, tolerance: int) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` at a time within ``tolerance`` seconds of ``now``."""
    return not receipt_signature_problem(header=header, secret=secret, body=body, now=now, tolerance=tolerance)


def receipt_signature_problem(*, header: str, secret: str, body: bytes, now: float, tolerance: int) -> str:
    """What is wrong with ``header`` ("" when it is a valid signature), for the log only:
    every problem gets the same answer."""
    if not header:
        return "missing_signature"
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        return "malformed_signature"
    timestamp = ""
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == SIGNATURE_SCHEME:
            candidates.append(value)
    if not _TIMESTAMP.fullmatch(timestamp) or not candidates:
        return "malformed_signature"
    if abs(now - int(timestamp)) > tolerance:
        return "timestamp_outside_window"
    expected = receipt_signature(secret=secret, timestamp=int(timestamp), body=body)
    # Every candidate is compared (constant time each), so the time taken does
    # not tell which one, or how much of it, matched.
    matched = False
    for candidate in candidates:
        matched |= bool(_HEX_DIGEST.fullmatch(candidate)) and hmac.compare_digest(candidate, expected)
    return "" if matched else "wrong_signature"


def _webhook(provider: str, channel: str) -> Mapping[str, Any] | None:
    """The configuration of a receipt source for ``channel``, or None."""
    config: Mapping[str, Any] | None = settings.CAKRA_RECEIPT_WEBHOOKS.get(provider)
    if config is None or config.get("CHANNEL") != channel:
        return None
    if len(config.get("SECRET", "")) < MIN_SECRET_LENGTH:
        # A short or empty secret is a configuration error, never an open door.
        logger.error("receipt_webhook.secret_too_short", provider=provider)
        return None
    return config


# Compared against when the provider is unknown, so an unknown name costs the
# same HMAC as a known one and timing does not list the configured providers.
_DECOY_SECRET = "decoy-" + "0" * MIN_SECRET_LENGTH


def _authenticate(
    request: HttpRequest, *, provider: str, channel: str, body: bytes
) -> tuple[Mapping[str, Any] | None, str]:
    """The provider's configuration, or None and the reason (for the log)."""
    config = _webhook(provider, channel)
    problem = receipt_signature_problem(
        header=request.headers.get(SIGNATURE_HEADER, ""),
        secret=config["SECRET"] if config else _DECOY_SECRET,
        body=body,
        now=time.time(),
        tolerance=int(settings.CAKRA_RECEIPT_SIGNATURE_TOLERANCE_SECONDS),
    )
    if config is None:
        return None, "unknown_provider"
    return (None, problem) if problem else (config, "")


# --- schemas ----------------------------------------------------------------
class EmailReceiptEventIn(BaseModel):
    # Unknown fields are ignored, unlike the intake API's closed schemas: a
    # provider adds fields to its events over time, and refusing them would
    # lose every receipt from the day it does. They are never stored.
    # A plain pydantic model, not ninja's Schema (as the intake inputs in
    # cakra.api.schemas): Schema wraps each event's validation in a hook for
    # reading Django objects, which tripled the cost of a 500-event body.
    model_config = ConfigDict(extra="ignore", strict=True)

    event_id: str = Field(
        pattern=REFERENCE_PATTERN,
        description="The provider's unique id of this event (1-128 printable ASCII characters). Idempotency key.",
        examples=["evt-01HZX3M8Q2"],
    )
    message_id: str = Field(
        pattern=REFERENCE_PATTERN,
        description="The provider reference of the message: the Message-ID Cakra gave it, angle brackets included.",
        examples=["<3f1c2b9e-8f7a-4c1e-9a51-0d6f1b2c3d4e@korlantas.polri.go.id>"],
    )
    event: Literal["delivered", "bounced", "deferred", "opened"] = Field(
        description=(
            "delivered: accepted by the recipient's server; opened: read; bounced: will never be delivered "
            "(the notice falls back to its next channel); deferred: still trying (recorded only)."
        ),
        examples=["delivered"],
    )
    timestamp: AwareDatetime = Field(
        description="When it happened, ISO 8601 with a UTC offset.", examples=["2026-11-29T08:15:03+07:00"]
    )
    detail: str = Field(
        default="",
        max_length=MAX_DETAIL_INPUT,
        description="The provider's reason (e.g. the SMTP reply of a bounce). Stored without addresses.",
        examples=["550 5.1.1 mailbox unavailable"],
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: object) -> object:
        return iso_datetime_parse(value)


_EVENTS = TypeAdapter(list[EmailReceiptEventIn])


class ReceiptEventResultOut(ApiOutput):
    event_id: str = Field(description="The event's id, as sent.")
    outcome: str = Field(
        description=(
            "applied (the delivery moved forward), recorded (stored, informational), ignored_older (stored; "
            "the delivery is already at or past it), duplicate (seen before, nothing changed), "
            "unknown_reference (no delivery has this message_id; nothing stored)."
        )
    )


class ReceiptBatchOut(ApiOutput):
    received: int = Field(description="Events in the request.")
    applied: int = Field(description="Events that moved a delivery forward.")
    recorded: int = Field(description="Informational events stored without a status change.")
    ignored_older: int = Field(description="Late or out-of-order events stored without a status change.")
    duplicate: int = Field(description="Events whose id was already received; nothing changed.")
    unknown_reference: int = Field(description="Events whose message_id matches no delivery; nothing stored.")
    results: list[ReceiptEventResultOut] = Field(description="One result per event, in request order.")


_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": EmailReceiptEventIn.model_json_schema(),
                }
            }
        },
    },
    "security": [],
    "parameters": [
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "description": 't=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>',
            "schema": {"type": "string"},
        }
    ],
}


# --- the endpoint -------------------------------------------------------------
# The counts of the 200 answer, in ReceiptBatchOut's order.
_COUNTED = (
    ReceiptResult.APPLIED,
    ReceiptResult.RECORDED,
    ReceiptResult.IGNORED_OLDER,
    ReceiptResult.DUPLICATE,
    ReceiptResult.UNKNOWN_REFERENCE,
)


def _error(status: int, *, code: str, message: str, field: str = "") -> HttpResponse:
    # Returned as is (not through the response schema, which would add null
    # fields), so these answers are byte for byte the API's other errors.
    return JsonResponse(error_body(code=code, message=message, field=field), status=status)


def _refuse(request: HttpRequest, *, reason: str, provider: str) -> HttpResponse:
    if not hit(AUTH_FAILURE_LIMIT, client_address(request)):
        raise RateLimitedError(wait=AUTH_FAILURE_LIMIT.seconds, message=AUTH_FAILURE_MESSAGE)
    access_denied_log(request=request, surface="receipt_webhook", reason=reason, provider=provider)
    return _error(401, code="unauthorized", message=UNAUTHORIZED_MESSAGE)


def _too_large() -> HttpResponse:
    return _error(413, code="request_too_large", message="the request body is too large", field="body")


def _parse(body: bytes) -> list[EmailReceiptEventIn]:
    try:
        parsed = strict_json_loads(body)
    except ValueError:  # jiter refuses too deep a document with a ValueError too
        raise HttpError(400, "the body is not valid JSON") from None  # mapped to code malformed_json
    if not isinstance(parsed, list):
        raise ValidationError([{"loc": ("body",), "type": "list_type", "msg": "must be a JSON array of events"}])
    limit = int(settings.CAKRA_RECEIPT_MAX_EVENTS)
    if not 1 <= len(parsed) <= limit:
        message = f"must hold 1 to {limit} events"
        raise ValidationError([{"loc": ("body",), "type": "too_long" if parsed else "too_short", "msg": message}])
    try:
        return _EVENTS.validate_python(parsed)
    except PydanticValidationError as exc:
        raise ValidationError(
            [{"loc": ("body", *e["loc"]), "type": e["type"], "msg": e["msg"]} for e in exc.errors()]
        ) from None


@router.post(
    "/receipts/email/{provider}",
    response={
        200: ReceiptBatchOut,
        400: ErrorOut,
        401: ErrorOut,
        404: ErrorOut,
        413: ErrorOut,
        415: ErrorOut,
        422: ErrorOut,
        429: ErrorOut,
    },
    summary="Email delivery receipts from a provider (signed webhook)",
    operation_id="receipt_email_report",
    openapi_extra=_REQUEST_BODY,
)
def receipt_email_report(request: HttpRequest, provider: str) -> HttpResponse:
    """A batch of delivery events from the email provider named in the path.

    Signed with `X-Cakra-Signature` (see the parameter). Idempotent per
    `event_id`. A receipt never moves a delivery backwards: a late or
    out-of-order event is stored and changes nothing.
    """
    started = time.monotonic()
    max_bytes = int(settings.CAKRA_RECEIPT_MAX_BYTES)
    declared = ascii_int_parse(request.META.get("CONTENT_LENGTH") or "")
    if declared is not None and declared > max_bytes:
        return _too_large()  # refused before reading the body
    body = request.body
    if len(body) > max_bytes:
        return _too_large()
    config, problem = _authenticate(request, provider=provider, channel="email", body=body)
    if config is None:
        # The path is the caller's text: only a configured name is logged.
        known = provider in settings.CAKRA_RECEIPT_WEBHOOKS
        return _refuse(request, reason=problem, provider=provider if known else "(unknown)")
    json_content_type_check(request)
    events = _parse(body)
    outcomes = receipts_record(
        provider=config["PROVIDER"],
        reports=[
            ReceiptReport(
                provider_reference=item.message_id,
                event=EMAIL_EVENTS[item.event],
                occurred_at=item.timestamp,
                event_id=item.event_id,
                detail=item.detail,
            )
            for item in events
        ],
    )
    counts = Counter(outcome.result for outcome in outcomes)
    logger.info(
        "receipt_webhook.batch",
        provider=provider,
        received=len(events),
        **{result.value: counts[result] for result in ReceiptResult},
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    if len(events) == 1 and outcomes[0].result == ReceiptResult.UNKNOWN_REFERENCE:
        message = "no delivery has this message_id"
        return _error(404, code="unknown_reference", message=message, field="[0].message_id")
    # Built as plain JSON, shaped as ReceiptBatchOut (which documents it):
    # a schema instance per event, dumped again by ninja, cost more than
    # parsing the request.
    answer: dict[str, Any] = {
        "received": len(events),
        **{result.value: counts[result] for result in _COUNTED},
        "results": [
            {"event_id": item.event_id, "outcome": outcome.result.value}
            for item, outcome in zip(events, outcomes, strict=True)
        ],
    }
    return JsonResponse(answer)
