"""One JSON shape for every error the API answers: ``{"error": {"code", "message", "field"?}}``.

Registered on the NinjaAPI in ``cakra.api.api``: domain errors, schema
errors, authentication, rate limits, oversized bodies and unexpected
failures all leave as this shape, never as an HTML page or a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from http import HTTPStatus
from typing import Any

import structlog
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from cakra.api.body import UnsupportedMediaTypeError
from cakra.api.schemas import ErrorDetailOut, ErrorOut, FieldErrorOut
from cakra.enforcement.errors import ConflictError, DomainError, NotFoundError
from cakra.enforcement.evidence import EvidenceError
from cakra.security.ratelimit import RateLimitedError

logger = structlog.get_logger(__name__)

# The whole response for an unknown, malformed or another region's id: one
# constant, so the answers cannot differ by a byte.
NOT_FOUND_MESSAGE = "not found"


def error_body(*, code: str, message: str, field: str = "", fields: list[FieldErrorOut] | None = None) -> Any:
    detail = ErrorDetailOut(code=code, message=message, field=field or None, fields=fields)
    return ErrorOut(error=detail).model_dump(exclude_none=True)


def _field_path(loc: tuple[Any, ...] | list[Any], *, prefix: str = "") -> str:
    """``("body", "payload", "evidence", 0, "content_base64")`` → ``"evidence[0].content_base64"``.

    ``prefix`` places the path inside an item of a batch: ``"violations[3]"``
    and ``("plate",)`` give ``"violations[3].plate"``.
    """
    parts = list(loc)
    if parts and parts[0] in {"body", "path", "query", "header", "cookie", "form", "file"}:
        parts = parts[1:]
    if parts and parts[0] == "payload":
        parts = parts[1:]
    path = prefix
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _prefixed(prefix: str, field: str) -> str:
    if not prefix:
        return field
    return f"{prefix}.{field}" if field else prefix


def _domain_status(exc: DomainError) -> int:
    if isinstance(exc, EvidenceError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    return 422


def _respond(api: NinjaAPI, request: HttpRequest, status: int, body: Any) -> HttpResponse:
    return api.create_response(request, body, status=status)


def domain_error_detail(exc: DomainError, *, prefix: str = "") -> tuple[int, ErrorDetailOut]:
    """The HTTP status and error detail of a domain error; ``prefix`` as in ``_field_path``."""
    if isinstance(exc, NotFoundError):
        return 404, ErrorDetailOut(code="not_found", message=NOT_FOUND_MESSAGE)
    code = "conflict" if isinstance(exc, ConflictError) else exc.code
    field = _prefixed(prefix, exc.field)
    return _domain_status(exc), ErrorDetailOut(code=code, message=exc.message, field=field or None)


def validation_error_detail(errors: Sequence[Mapping[str, Any]], *, prefix: str = "") -> ErrorDetailOut:
    """The error detail (always 422) of schema errors in pydantic's shape; ``prefix`` as in ``_field_path``."""
    fields = [
        FieldErrorOut(
            field=_field_path(item.get("loc", ()), prefix=prefix),
            code=str(item.get("type", "invalid")),
            message=str(item.get("msg", "")),
        )
        for item in errors
    ]
    # A plate problem gets its own code; everything else is a schema error.
    code = fields[0].code if len(fields) == 1 and fields[0].code == "invalid_plate" else "validation_error"
    first = fields[0] if fields else None
    message = f"{first.field}: {first.message}" if first else "the request does not match the schema"
    return ErrorDetailOut(code=code, message=message, field=first.field if first else None, fields=fields)


def _body(detail: ErrorDetailOut) -> Any:
    return ErrorOut(error=detail).model_dump(exclude_none=True)


def _on_domain_error(request: HttpRequest, exc: DomainError, *, api: NinjaAPI) -> HttpResponse:
    status, detail = domain_error_detail(exc)
    return _respond(api, request, status, _body(detail))


def _on_validation_error(request: HttpRequest, exc: ValidationError, *, api: NinjaAPI) -> HttpResponse:
    return _respond(api, request, 422, _body(validation_error_detail(exc.errors)))


def _on_http_error(request: HttpRequest, exc: HttpError, *, api: NinjaAPI) -> HttpResponse:
    if isinstance(exc, AuthenticationError):
        body = error_body(code="unauthorized", message="a valid API key is required")
        response = _respond(api, request, 401, body)
        response["WWW-Authenticate"] = 'Bearer realm="cakra"'
        return response
    if isinstance(exc.__cause__, UnsupportedMediaTypeError):  # raised inside ninja's body parsing
        return _on_unsupported_media_type(request, exc.__cause__, api=api)
    if exc.status_code == HTTPStatus.BAD_REQUEST:  # ninja's only 400: the body is not JSON
        body = error_body(code="malformed_json", message="the body is not valid JSON", field="body")
        return _respond(api, request, 400, body)
    if exc.status_code == HTTPStatus.TOO_MANY_REQUESTS:
        return _respond(api, request, 429, error_body(code="rate_limited", message="too many requests"))
    return _respond(api, request, exc.status_code, error_body(code="http_error", message=str(exc)))


def _on_rate_limited(request: HttpRequest, exc: RateLimitedError, *, api: NinjaAPI) -> HttpResponse:
    body = error_body(code="rate_limited", message=exc.message)
    response = _respond(api, request, 429, body)
    response["Retry-After"] = exc.retry_after_header
    return response


def _on_too_big(request: HttpRequest, exc: RequestDataTooBig, *, api: NinjaAPI) -> HttpResponse:
    body = error_body(code="request_too_large", message="the request body is too large", field="body")
    return _respond(api, request, 413, body)


def _on_unsupported_media_type(request: HttpRequest, exc: UnsupportedMediaTypeError, *, api: NinjaAPI) -> HttpResponse:
    body = error_body(code="unsupported_media_type", message="the body must be sent as Content-Type: application/json")
    return _respond(api, request, 415, body)


def _on_not_found(request: HttpRequest, exc: Http404, *, api: NinjaAPI) -> HttpResponse:
    return _respond(api, request, 404, error_body(code="not_found", message=NOT_FOUND_MESSAGE))


def method_not_allowed_response(request: HttpRequest, *, api: NinjaAPI, allowed: Iterable[str]) -> HttpResponse:
    """The JSON 405, its ``Allow`` naming exactly the methods the resource has."""
    response = _respond(api, request, 405, error_body(code="method_not_allowed", message="method not allowed"))
    response["Allow"] = ", ".join(sorted(allowed))
    return response


def _on_unexpected(request: HttpRequest, exc: Exception, *, api: NinjaAPI) -> HttpResponse:
    # The route pattern, not the path: paths carry notice numbers.
    route = request.resolver_match.route if request.resolver_match else ""
    logger.error("api.unhandled_error", route=route, method=request.method, exc_info=exc)
    return _respond(api, request, 500, error_body(code="internal_error", message="internal error"))


_HANDLERS: list[tuple[type[Exception], Callable[..., HttpResponse]]] = [
    (DomainError, _on_domain_error),
    (ValidationError, _on_validation_error),
    (HttpError, _on_http_error),
    (RateLimitedError, _on_rate_limited),
    (RequestDataTooBig, _on_too_big),
    (UnsupportedMediaTypeError, _on_unsupported_media_type),
    (Http404, _on_not_found),
    (Exception, _on_unexpected),
]


def install_error_handlers(api: NinjaAPI) -> None:
    for exc_class, handler in _HANDLERS:
        api.add_exception_handler(exc_class, partial(handler, api=api))
