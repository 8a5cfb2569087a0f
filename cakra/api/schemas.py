"""Input and output schemas of the public API; every field is described for OpenAPI.

Inputs are strict (no type coercion: ``"80"`` is not a speed, ``true`` is not
a number) and closed (an unknown field is an error, not silently dropped).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any, Literal

from django.utils import timezone
from ninja import Field
from pydantic import AwareDatetime, BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from cakra.registry.plates import InvalidPlateError, plate_normalise
from cakra.security.freetext import (
    LOCATION_MAX_LENGTH,
    LOCATION_PATTERN,
    FreeTextError,
    location_clean,
    text_link_check,
)

CAPTURE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_CAPTURE_AGE = timedelta(days=90)
# Indonesia's bounding box with a margin (Sabang to Merauke, Miangas to Rote).
LATITUDE_RANGE = (-11.5, 6.5)
LONGITUDE_RANGE = (94.5, 141.5)

MIN_BASE64_LENGTH = 4
# Standard base64 with its padding, no line breaks (RFC 4648, section 4).
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# The start of a JPEG file in base64 (an example, not a whole image), itself
# matching BASE64_PATTERN.
EXAMPLE_IMAGE_BASE64 = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4n"


def iso_datetime_parse(value: object) -> datetime:
    """An ISO 8601 string into a datetime, for strict-mode schemas.

    Strict mode wants a datetime object; JSON carries a string. Numbers
    (epoch seconds) are refused: their offset is a guess. Whether an offset
    is present is checked by the field's own validator.
    """
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "must be an ISO 8601 string with a UTC offset")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise PydanticCustomError("datetime_parsing", "must be an ISO 8601 string with a UTC offset") from exc


class _Input(BaseModel):
    """Strict, closed input.

    A plain pydantic model rather than ninja's ``Schema``: ninja's schema
    wraps every validation (also of each nested evidence item) in a hook
    for reading Django objects, which inputs parsed from JSON never are;
    on the batch route that hook cost more than the fields' own checks.
    ninja takes any pydantic model as a body, with the same OpenAPI.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


class ApiOutput(BaseModel):
    """An answer, always built field by field from the service's result.

    A plain pydantic model too: ninja's ``Schema`` runs its Django-reading
    hook on every construction and again, for every nested object, when
    ninja checks the answer against the route's response type, which a
    plain model instance passes as it is. On the batch route that was 35
    attribute lookups per item for nothing. The OpenAPI is the same.
    """


class EvidenceIn(_Input):
    kind: Literal["vehicle", "plate", "context"] = Field(
        description="What the image shows: the whole vehicle, a close-up of the plate, or the scene.",
        examples=["vehicle"],
    )
    content_base64: str = Field(
        # Checked by _long_enough: pydantic's min_length counts the characters
        # one by one, ~0.02 ms on a 400 KB photo; len() of a str is free.
        # The alphabet and padding evidence_decode_base64 accepts, declared
        # (pattern, contentEncoding) so that the schema admits nothing the
        # decoder refuses; enforced there, not by a regex over megabytes here.
        json_schema_extra={
            "minLength": MIN_BASE64_LENGTH,
            "pattern": BASE64_PATTERN,
            "contentEncoding": "base64",
            "format": "byte",
        },
        description=(
            "The image file, standard base64 without line breaks. JPEG or PNG only, identified by its "
            "content (magic bytes), at most CAKRA_EVIDENCE_MAX_BYTES decoded (default 5 MiB) and 40 "
            "megapixels. Stored byte for byte with its SHA-256; citizens only see a re-encoded copy "
            "without metadata."
        ),
        examples=[EXAMPLE_IMAGE_BASE64],
    )

    @field_validator("content_base64")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if len(value) < MIN_BASE64_LENGTH:
            # Exactly what min_length would answer.
            raise PydanticCustomError(
                "string_too_short",
                "String should have at least {min_length} characters",
                {"min_length": MIN_BASE64_LENGTH},
            )
        return value


class ViolationFieldsIn(_Input):
    """Every field of a capture but its evidence: what a CSV import row carries besides image paths."""

    capture_id: str = Field(
        pattern=CAPTURE_ID_PATTERN,
        description=(
            "The camera system's unique id of this capture (1-64 characters of A-Z a-z 0-9 . _ : -, "
            "nothing shaped like a domain name: a dot is not followed by a letter). "
            "Idempotency key: the same capture sent again with the same content answers 200 with the "
            "violation already stored; with different content, 409."
        ),
        examples=["ETLE-MJ-0042:20261129T081503.120"],
    )
    camera_id: str = Field(
        pattern=CAPTURE_ID_PATTERN,
        description=(
            "The camera's id in the ETLE back office (1-64 characters of A-Z a-z 0-9 . _ : -, nothing shaped "
            "like a domain name: a dot is not followed by a letter)."
        ),
        examples=["CAM-SUDIRMAN-03"],
    )
    captured_at: AwareDatetime = Field(
        description=(
            "When the camera captured the violation: ISO 8601 with a UTC offset (a time without one is "
            "refused). At most 5 minutes in the future and 90 days in the past."
        ),
        examples=["2026-11-29T08:15:03.120+07:00"],
    )
    location: str = Field(
        min_length=1,
        max_length=LOCATION_MAX_LENGTH,
        description=(
            "Where it happened, as printed on the notice (street, direction, city). Latin letters (accents "
            "allowed), digits, spaces and . , ( ) / - ' & : only, NFC-normalised; no link, domain name "
            "(a dot followed by a letter: write 'Jl. Sudirman', not 'Jl.Sudirman'), e-mail address or "
            "phone number (7 or more digits in a run, separators included). Refused with 422, never repaired."
        ),
        examples=["Jl. Jend. Sudirman (arah Blok M), Jakarta Selatan"],
        # Declared, not enforced by pydantic: location_clean refuses with the
        # free-text error codes API clients rely on.
        json_schema_extra={"pattern": LOCATION_PATTERN},
    )
    latitude: float | None = Field(
        default=None,
        ge=LATITUDE_RANGE[0],
        le=LATITUDE_RANGE[1],
        allow_inf_nan=False,
        description="WGS 84 latitude of the camera, within Indonesia; stored to 6 decimals.",
        examples=[-6.224524],
    )
    longitude: float | None = Field(
        default=None,
        ge=LONGITUDE_RANGE[0],
        le=LONGITUDE_RANGE[1],
        allow_inf_nan=False,
        description="WGS 84 longitude of the camera, within Indonesia; stored to 6 decimals.",
        examples=[106.807145],
    )
    plate: str = Field(
        max_length=16,
        description=(
            "The registration plate read by the camera (TNKB), e.g. 'B 1234 XYZ'; spaces and case do not "
            "matter. Matched against the vehicle registry at intake."
        ),
        examples=["B 1234 XYZ"],
    )
    article: str = Field(
        max_length=16,
        description="The violated article of UU 22/2009, e.g. '287(1)' (signs and markings), '287(5)' (speeding).",
        examples=["287(1)"],
    )
    measured_speed_kmh: int | None = Field(
        default=None, ge=0, le=400, description="Measured speed in km/h (speeding only).", examples=[92]
    )
    speed_limit_kmh: int | None = Field(
        default=None, ge=1, le=200, description="The speed limit in force, km/h (speeding only).", examples=[60]
    )

    @field_validator("captured_at", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: object) -> object:
        return iso_datetime_parse(value)

    @field_validator("measured_speed_kmh", "speed_limit_kmh", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # JSON Schema's integer is any number without a fraction, 92.0 too,
        # which the JSON parser hands over as a float that strict mode would
        # refuse. 92.5, "92" and true stay refused.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("captured_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        now = timezone.now()
        if value > now + MAX_FUTURE_SKEW:
            raise PydanticCustomError("datetime_future", "is in the future")
        if value < now - MAX_CAPTURE_AGE:
            raise PydanticCustomError("datetime_too_old", "is more than 90 days ago")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        # The one rule for text printed in official notices (cakra.security.freetext).
        try:
            return location_clean(value=value)
        except FreeTextError as exc:
            raise PydanticCustomError(exc.code, exc.message) from None

    @field_validator("capture_id", "camera_id")
    @classmethod
    def _no_link(cls, value: str) -> str:
        try:
            text_link_check(value=value)
        except FreeTextError as exc:
            raise PydanticCustomError(exc.code, exc.message) from None
        return value

    @field_validator("plate")
    @classmethod
    def _plate(cls, value: str) -> str:
        try:
            return plate_normalise(value)
        except InvalidPlateError as exc:
            raise PydanticCustomError("invalid_plate", str(exc)) from exc


class ViolationIn(ViolationFieldsIn):
    evidence: list[EvidenceIn] = Field(
        min_length=1, max_length=4, description="One to four evidence images, in the order they are shown."
    )


class DeliveryOut(ApiOutput):
    channel: str = Field(description="whatsapp, sms, email or post.", examples=["whatsapp"])
    step: int = Field(description="Position in the notice's delivery plan, from 1.", examples=[1])
    status: str = Field(
        description="planned, pending, sending, sent, delivered, read, failed_temporary or failed_permanent.",
        examples=["delivered"],
    )
    sent_at: datetime | None = Field(description="When the provider accepted the message.")
    delivered_at: datetime | None = Field(description="When delivery was confirmed (receipt or tracking).")


class ViolationOut(ApiOutput):
    """A capture as its sender may see it: that Cakra holds it, nothing of what followed.

    Whether the plate matched the vehicle registry, the officer's decision and
    the notice are left out on purpose. They differ between a registered and
    an unregistered plate (only a registered one can be validated and get a
    notice), so showing any of them would let every intake key, or whoever
    stole one, test plates against the registry. The case is followed in the
    back office, by officers who sign in with TOTP and whose views are audited.
    """

    id: uuid.UUID = Field(description="Cakra's id of the violation.")
    capture_id: str = Field(description="The capture id the back office sent.", examples=["ETLE-MJ-0042:1"])
    status: Literal["received"] = Field(
        description=(
            "Always 'received': Cakra holds the capture and its evidence. The registry match, the officer's "
            "decision and any notice are not reported to API clients (no registry oracle); officers follow "
            "the case in the back office."
        ),
        examples=["received"],
    )
    plate: str = Field(description="The plate, normalised.", examples=["B 1234 XYZ"])
    article: str = Field(description="The article code.", examples=["287(1)"])
    received_at: datetime = Field(description="When Cakra received the capture.")


class TimelineEntryOut(ApiOutput):
    at: datetime = Field(description="When it was recorded.")
    event: str = Field(
        description=(
            "What happened: notice.issued, delivery.planned, delivery.sent, delivery.failed (an attempt that "
            "did not go through), delivery.lease_expired (the worker sending it died; sent again), "
            "delivery.receipt (a provider's status report), delivery.timed_out (not confirmed by the "
            "region's cut-off), delivery.fallback (the plan moved to its next channel), "
            "delivery.plan_exhausted (no channel left), notice.notified. Other kinds may be added."
        ),
        examples=["delivery.fallback"],
    )
    channel: str | None = Field(
        description="The delivery's channel; for a fallback, the channel given up. Null for notice-wide events.",
        examples=["whatsapp"],
    )
    detail: str = Field(
        description="One line in English: attempt number, provider, outcome, error or reason. Never personal data.",
        examples=["whatsapp → sms: not confirmed by cut-off (48 h)"],
    )


class NoticeOut(ApiOutput):
    number: str = Field(description="The notice number (16 digits, the last two are check digits).")
    status: str = Field(description="issued, notified, confirmed or cancelled.", examples=["notified"])
    issued_at: datetime = Field(description="When the notice was issued.")
    confirm_by: date = Field(description="The last day the owner can confirm.")
    fine_amount: int = Field(description="The deposit in rupiah (the statutory maximum).", examples=[500000])
    article: str = Field(description="The article code.", examples=["287(1)"])
    deliveries: list[DeliveryOut] = Field(description="The delivery plan and how far each step got.")
    timeline: list[TimelineEntryOut] = Field(
        description="Everything that happened to the notice and its deliveries, oldest first: each attempt, "
        "receipt, timeout and fallback step."
    )


class FieldErrorOut(ApiOutput):
    field: str = Field(description="Where in the request, e.g. 'evidence[0].content_base64'.")
    code: str = Field(description="A stable machine-readable reason.", examples=["missing"])
    message: str = Field(description="A human-readable reason (English).")


class ErrorDetailOut(ApiOutput):
    code: str = Field(
        description=(
            "Stable machine-readable error code: malformed_json, validation_error, invalid_plate, "
            "unknown_article, invalid_base64, invalid_image, unsupported_media_type, image_too_large, "
            "image_dimensions_exceeded, request_too_large, unauthorized, not_found, conflict, "
            "rate_limited, method_not_allowed, internal_error."
        ),
        examples=["invalid_image"],
    )
    message: str = Field(description="A human-readable explanation (English).")
    field: str | None = Field(
        default=None, description="The request field at fault, if any.", examples=["evidence[0].content_base64"]
    )
    fields: list[FieldErrorOut] | None = Field(default=None, description="For schema errors: every field at fault.")


class ErrorOut(ApiOutput):
    error: ErrorDetailOut = Field(description="Every error has this one shape.")


MAX_BATCH_ITEMS = 1000


class ViolationBatchIn(_Input):
    # Each item must be an object (a non-object refuses the whole batch,
    # naming it); what is inside is checked item by item.
    violations: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        description=(
            "1 to 1,000 captures, each exactly as the body of POST /api/v1/violations. Items are checked one "
            "by one: an object that is not a valid capture is refused in its own result (its field named as "
            "'violations[3].plate') and never stops the others; an item that is not an object at all refuses "
            "the whole batch (422, field 'violations[3]'). The whole body is capped by CAKRA_MAX_BATCH_BYTES "
            "(default 128 MiB, about 300 captures with one 1080p JPEG each); size batches to stay below it."
        ),
    )


def violation_batch_in_openapi() -> dict[str, Any]:
    """The OpenAPI schema of the batch body, each item documented as the single route's ViolationIn.

    ``violations`` is typed loosely (objects of any content) so that one bad
    item cannot fail the whole envelope: every item is validated on its own.
    The schema says so (a ViolationIn, or any other object, refused in its
    own result), so that what the route accepts is what the schema admits.
    """
    schema = ViolationBatchIn.model_json_schema()
    schema["properties"]["violations"]["items"] = {
        "anyOf": [{"$ref": "#/components/schemas/ViolationIn"}, {"type": "object"}],
        "description": "A capture (ViolationIn); any other object is answered in its own result with status 422.",
    }
    return schema


class BatchItemResultOut(ApiOutput):
    index: int = Field(description="Position of the item in the request's 'violations', from 0.", examples=[0])
    status: int = Field(
        json_schema_extra={"enum": [200, 201, 409, 413, 415, 422]},
        description=(
            "What POST /api/v1/violations would have answered for this item alone: 201 stored, 200 the same "
            "capture was already stored (replay, also for a repeat within the batch), 409 the capture_id is "
            "stored with different content, 413/415/422 the item was refused (nothing of it stored)."
        ),
        examples=[201],
    )
    violation: ViolationOut | None = Field(description="The stored violation (201 and 200); null when refused.")
    error: ErrorDetailOut | None = Field(
        description="Why the item was refused, its field prefixed with 'violations[<index>]'; null when stored."
    )


class ViolationBatchOut(ApiOutput):
    results: list[BatchItemResultOut] = Field(description="One result per item, in the order of the request.")
    created: int = Field(description="Items answered 201.", examples=[98])
    replayed: int = Field(description="Items answered 200 (already stored, same content).", examples=[1])
    rejected: int = Field(description="Items refused (409, 413, 415, 422).", examples=[1])
