"""API endpoints: thin. Authenticate, map the schema to a service call, map the result to a schema.

Every lookup is scoped to the calling key's region; an unknown id, a
malformed id and another region's record get the same 404.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django.http import HttpRequest
from ninja import Router, Status

from cakra.api.auth import ApiKeyAuth
from cakra.api.errors import MethodNotAllowedError
from cakra.api.models import ApiKey
from cakra.api.schemas import DeliveryOut, ErrorOut, NoticeOut, ViolationIn, ViolationOut
from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.evidence import evidence_decode_base64
from cakra.enforcement.intake import EvidenceSubmission, ViolationSubmission, violation_receive
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.selectors import notice_get_for_region, violation_get_for_region, violation_notice_number

router = Router(auth=ApiKeyAuth(), tags=["violations"])

COORDINATE_QUANTUM = Decimal("0.000001")
_AUTH_ERRORS: dict[int, Any] = {401: ErrorOut, 429: ErrorOut}
_READ_ERRORS: dict[int, Any] = {**_AUTH_ERRORS, 404: ErrorOut}
_WRITE_ERRORS: dict[int, Any] = {
    **_AUTH_ERRORS,
    400: ErrorOut,
    409: ErrorOut,
    413: ErrorOut,
    415: ErrorOut,
    422: ErrorOut,
}


def _api_key(request: HttpRequest) -> ApiKey:
    # Set by ninja after ApiKeyAuth accepted the request; never None here.
    return cast("ApiKey", request.auth)  # type: ignore[attr-defined]


def _coordinate(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(COORDINATE_QUANTUM)


def _submission(payload: ViolationIn) -> ViolationSubmission:
    return ViolationSubmission(
        capture_id=payload.capture_id,
        camera_id=payload.camera_id,
        captured_at=payload.captured_at,
        location=payload.location,
        latitude=_coordinate(payload.latitude),
        longitude=_coordinate(payload.longitude),
        plate=payload.plate,
        article_code=payload.article,
        measured_speed_kmh=payload.measured_speed_kmh,
        speed_limit_kmh=payload.speed_limit_kmh,
        evidence=tuple(
            EvidenceSubmission(
                kind=item.kind,
                content=evidence_decode_base64(text=item.content_base64, field=f"evidence[{position}].content_base64"),
            )
            for position, item in enumerate(payload.evidence)
        ),
    )


def _violation_out(violation: Violation) -> ViolationOut:
    return ViolationOut(
        id=violation.id,
        capture_id=violation.capture_id,
        status=violation.status,
        plate=violation.plate,
        article=violation.article.code,
        registry_match=violation.vehicle_id is not None,
        received_at=violation.received_at,
        decided_at=violation.decided_at,
        notice_number=violation_notice_number(violation=violation),
    )


def _notice_out(notice: Notice) -> NoticeOut:
    return NoticeOut(
        number=notice.number,
        status=notice.status,
        issued_at=notice.issued_at,
        confirm_by=notice.confirm_by,
        fine_amount=notice.fine_amount,
        article=notice.article.code,
        deliveries=[
            DeliveryOut(
                channel=delivery.channel,
                step=delivery.step,
                status=delivery.status,
                sent_at=delivery.sent_at,
                delivered_at=delivery.delivered_at,
            )
            for delivery in notice.deliveries.all()
        ],
    )


@router.post(
    "/violations",
    response={200: ViolationOut, 201: ViolationOut, **_WRITE_ERRORS},
    summary="Submit one camera capture",
    operation_id="violation_create",
)
def violation_create(request: HttpRequest, payload: ViolationIn) -> Status[ViolationOut]:
    """Receive one violation captured by an ETLE camera, with its evidence images.

    201 on first receipt. The same capture again with the same content answers
    200 with the violation already stored (safe to retry after a timeout); the
    same `capture_id` with different content answers 409. With a pre-validated
    key and a registry match, the notice is issued at once and its number is
    in the answer. Nothing is stored when the answer is an error.
    """
    key = _api_key(request)
    result = violation_receive(api_key=key, submission=_submission(payload))
    violation = violation_get_for_region(region_id=key.region_id, violation_id=str(result.violation.pk))
    return Status(201 if result.created else 200, _violation_out(violation))


@router.get(
    "/violations/{violation_id}",
    response={200: ViolationOut, **_READ_ERRORS},
    summary="Status of a violation",
    operation_id="violation_get",
)
def violation_get(request: HttpRequest, violation_id: str) -> ViolationOut:
    """The status of a violation received from this key's region (404 for any other)."""
    key = _api_key(request)
    return _violation_out(violation_get_for_region(region_id=key.region_id, violation_id=violation_id))


@router.get(
    "/notices/{number}",
    response={200: NoticeOut, **_READ_ERRORS},
    summary="Status of a notice and its deliveries",
    operation_id="notice_get",
    tags=["notices"],
)
def notice_get(request: HttpRequest, number: str) -> NoticeOut:
    """A notice of this key's region with its delivery steps; no personal data (404 for any other)."""
    key = _api_key(request)
    return _notice_out(notice_get_for_region(region_id=key.region_id, number=number))


# Other methods on the API's paths answer a JSON 405 (ninja's own is plain text).
_OTHER_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@router.api_operation([m for m in _OTHER_METHODS if m != "POST"], "/violations", auth=None, include_in_schema=False)
def violations_other_methods(request: HttpRequest) -> None:
    raise MethodNotAllowedError(allowed=["POST"])


@router.api_operation(
    [m for m in _OTHER_METHODS if m != "GET"], "/violations/{violation_id}", auth=None, include_in_schema=False
)
def violation_other_methods(request: HttpRequest, violation_id: str) -> None:
    raise MethodNotAllowedError(allowed=["GET"])


@router.api_operation(
    [m for m in _OTHER_METHODS if m != "GET"], "/notices/{number}", auth=None, include_in_schema=False
)
def notice_other_methods(request: HttpRequest, number: str) -> None:
    raise MethodNotAllowedError(allowed=["GET"])


fallback_router = Router(auth=None)


@fallback_router.api_operation(_OTHER_METHODS, "/{path:rest}", include_in_schema=False)
def unknown_path(request: HttpRequest, rest: str) -> None:
    """Any other path under the API answers the JSON 404 (Django's would be an HTML page)."""
    raise NotFoundError("no such endpoint")
