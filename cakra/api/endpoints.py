"""API endpoints: thin. Authenticate, map the schema to a service call, map the result to a schema.

Every lookup is scoped to the calling key's region; an unknown id, a
malformed id and another region's record get the same 404.
"""

from __future__ import annotations

from typing import Any, cast

import pydantic
import structlog
from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Status
from ninja.errors import ValidationError

from cakra.api.auth import ApiKeyAuth
from cakra.api.body import json_body_read
from cakra.api.errors import domain_error_detail, validation_error_detail
from cakra.api.intake import (
    CHUNK_SIZE,
    IntakeOutcome,
    ViolationSubmission,
    violation_receive,
    violations_receive,
)
from cakra.api.models import ApiKey
from cakra.api.schemas import (
    BatchItemResultOut,
    DeliveryOut,
    ErrorOut,
    NoticeOut,
    TimelineEntryOut,
    ViolationBatchIn,
    ViolationBatchOut,
    ViolationIn,
    ViolationOut,
    violation_batch_in_openapi,
)
from cakra.api.selectors import notice_get_for_region
from cakra.api.submissions import submission_from_api
from cakra.delivery.selectors import notice_timeline
from cakra.enforcement.errors import DomainError, NotFoundError
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.selectors import violation_get_for_region
from cakra.security.denials import access_denied_log

logger = structlog.get_logger(__name__)

router = Router(auth=ApiKeyAuth(), tags=["violations"])

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
# A batch is answered 200 even when items are refused (each result says why);
# these are the answers for a request that cannot be processed at all.
_BATCH_ERRORS: dict[int, Any] = {**_AUTH_ERRORS, 400: ErrorOut, 413: ErrorOut, 415: ErrorOut, 422: ErrorOut}


def _api_key(request: HttpRequest) -> ApiKey:
    # Set by ninja after ApiKeyAuth accepted the request; never None here.
    return cast("ApiKey", request.auth)  # type: ignore[attr-defined]


def _violation_out(violation: Violation) -> ViolationOut:
    # The same fields, and the same status, whether or not the plate is in
    # the registry and a notice was issued: see ViolationOut.
    return ViolationOut(
        id=violation.id,
        capture_id=violation.capture_id,
        status="received",
        plate=violation.plate,
        article=violation.article.code,
        received_at=violation.received_at,
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
        timeline=[
            TimelineEntryOut(at=entry.at, event=entry.event, channel=entry.channel or None, detail=entry.detail)
            for entry in notice_timeline(notice=notice)
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
    key and a registry match, the notice is issued at once; the answer is the
    same either way (status `received`), so it never tells whether a plate is
    registered. Nothing is stored when the answer is an error.
    """
    key = _api_key(request)
    result = violation_receive(api_key=key, submission=submission_from_api(payload))
    # The answer needs nothing the stored row adds to what intake holds (as
    # the batch route's answers), so it is not read back.
    return Status(201 if result.created else 200, _violation_out(result.violation))


# Registered before "/violations/{violation_id}": its URL pattern would match "batch" too.
@router.post(
    "/violations/batch",
    response={200: ViolationBatchOut, **_BATCH_ERRORS},
    summary="Submit up to 1,000 camera captures",
    operation_id="violation_batch_create",
    # The route reads its own body (see cakra.api.body), so ninja cannot
    # describe it: the schema is given here, its items referring to the
    # single route's ViolationIn.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": violation_batch_in_openapi()}},
        }
    },
)
def violation_batch_create(request: HttpRequest) -> ViolationBatchOut:
    """Receive many captures at once; each item is answered as POST /api/v1/violations would answer it.

    The answer is 200 with one result per item, in order, as soon as the
    batch itself could be read: each item is stored (201), recognised as
    already stored (200, also for a repeat of an earlier item of the same
    batch) or refused (409, 413, 415, 422, naming the field as
    `violations[<index>].<field>`). A refused item stores nothing and never
    affects the others, so a batch is safe to send again after a timeout.
    A whole batch is refused (nothing stored) for a bad key (401), a body
    not declared as `application/json` (415), a body that is not JSON (400),
    above the batch cap (413), or not
    `{"violations": [...]}` with 1 to 1,000 items that are all JSON objects
    (422, naming the first item that is not, as `violations[<index>]`).
    """
    key = _api_key(request)
    # Read only now that the key is accepted (see cakra.api.body).
    data = json_body_read(request, max_bytes=settings.CAKRA_MAX_BATCH_BYTES)
    try:
        items = ViolationBatchIn.model_validate(data).violations
    except pydantic.ValidationError as exc:
        raise ValidationError([dict(error) for error in exc.errors(include_url=False)]) from exc
    del data  # from here on, each item's text is released once the item is decoded
    results: list[BatchItemResultOut] = []
    for start in range(0, len(items), CHUNK_SIZE):
        results.extend(_batch_chunk(key=key, items=items, start=start, stop=min(len(items), start + CHUNK_SIZE)))
    created = sum(result.status == 201 for result in results)  # noqa: PLR2004
    replayed = sum(result.status == 200 for result in results)  # noqa: PLR2004
    logger.info(
        "violation.batch_received",
        region=key.region.code,
        api_key=key.prefix,
        items=len(results),
        created=created,
        replayed=replayed,
    )
    return ViolationBatchOut(
        results=results, created=created, replayed=replayed, rejected=len(results) - created - replayed
    )


def _batch_chunk(*, key: ApiKey, items: list[Any], start: int, stop: int) -> list[BatchItemResultOut]:
    """Check and decode items ``start:stop`` and receive those that pass, in one service call."""
    answered: dict[int, BatchItemResultOut] = {}
    pending: list[tuple[int, ViolationSubmission]] = []
    for index in range(start, stop):
        item, items[index] = items[index], None
        prefix = f"violations[{index}]"
        try:
            pending.append((index, submission_from_api(ViolationIn.model_validate(item))))
        except pydantic.ValidationError as exc:
            detail = validation_error_detail([dict(error) for error in exc.errors(include_url=False)], prefix=prefix)
            answered[index] = BatchItemResultOut(index=index, status=422, violation=None, error=detail)
        except DomainError as exc:  # evidence that is not base64
            status, detail = domain_error_detail(exc, prefix=prefix)
            answered[index] = BatchItemResultOut(index=index, status=status, violation=None, error=detail)
    outcomes = violations_receive(api_key=key, submissions=[submission for _, submission in pending])
    for (index, _), outcome in zip(pending, outcomes, strict=True):
        answered[index] = _batch_result(index=index, outcome=outcome)
    return [answered[index] for index in range(start, stop)]


def _batch_result(*, index: int, outcome: IntakeOutcome) -> BatchItemResultOut:
    if outcome.result is not None:
        status = 201 if outcome.result.created else 200
        return BatchItemResultOut(
            index=index, status=status, violation=_violation_out(outcome.result.violation), error=None
        )
    assert outcome.error is not None  # noqa: S101 - an outcome is a result or an error
    status, detail = domain_error_detail(outcome.error, prefix=f"violations[{index}]")
    return BatchItemResultOut(index=index, status=status, violation=None, error=detail)


@router.get(
    "/violations/{violation_id}",
    response={200: ViolationOut, **_READ_ERRORS},
    summary="Status of a violation",
    operation_id="violation_get",
)
def violation_get(request: HttpRequest, violation_id: str) -> ViolationOut:
    """The status of a violation received from this key's region (404 for any other)."""
    key = _api_key(request)
    try:
        violation = violation_get_for_region(region_id=key.region_id, violation_id=violation_id)
    except NotFoundError:
        _not_found_log(request, key=key, object_type="violation")
        raise
    return _violation_out(violation)


@router.get(
    "/notices/{number}",
    response={200: NoticeOut, **_READ_ERRORS},
    summary="Status of a notice and its deliveries",
    operation_id="notice_get",
    tags=["notices"],
)
def notice_get(request: HttpRequest, number: str) -> NoticeOut:
    """A notice of this key's region with its delivery steps and its timeline (every attempt, receipt,
    timeout and fallback step); no personal data (404 for any other)."""
    key = _api_key(request)
    try:
        notice = notice_get_for_region(region_id=key.region_id, number=number)
    except NotFoundError:
        _not_found_log(request, key=key, object_type="notice")
        raise
    return _notice_out(notice)


def _not_found_log(request: HttpRequest, *, key: ApiKey, object_type: str) -> None:
    # Unknown ids and another region's are not told apart (that would take
    # one more query on every miss); the id is the caller's text and is not logged.
    access_denied_log(
        request=request, surface="api", reason="not_found_in_region", api_key=key.prefix, object_type=object_type
    )


fallback_router = Router(auth=None)


# Every standard method (HEAD, OPTIONS and TRACE too): an unknown path is a 404
# whatever the method, never a 405 that would list methods for a resource that
# does not exist.
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


@fallback_router.api_operation(HTTP_METHODS, "/{path:rest}", include_in_schema=False)
def unknown_path(request: HttpRequest, rest: str) -> None:
    """Any other path under the API answers the JSON 404 (Django's would be an HTML page)."""
    raise NotFoundError("no such endpoint")
