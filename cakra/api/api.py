"""The public JSON API (django-ninja); OpenAPI 3 at /api/v1/openapi.json.

The interactive docs page is off: it loads scripts from a CDN, which the
Content-Security-Policy (``default-src 'none'``) rightly blocks. The JSON
schema is what clients generate code from.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponseBase, HttpResponseNotAllowed
from django.urls import URLPattern, URLResolver
from django.views.decorators.http import require_safe
from ninja import NinjaAPI
from ninja.parser import Parser

from cakra.api.body import json_content_type_check, strict_json_loads
from cakra.api.endpoints import fallback_router, router, unknown_path
from cakra.api.errors import NOT_FOUND_MESSAGE, error_body, install_error_handlers, method_not_allowed_response
from cakra.api.receipts import router as receipts_router
from cakra.api.sms_callbacks import router as sms_callbacks_router
from cakra.api.whatsapp import router as whatsapp_router


class StrictJsonParser(Parser):
    """Declared JSON, standard JSON only: no NaN/Infinity, no duplicate keys."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        # ninja wraps what this raises in its HttpError 400; the error
        # handler answers 415 when the cause is the media type.
        json_content_type_check(request)
        parsed: dict[str, Any] = strict_json_loads(request.body)
        return parsed


api = NinjaAPI(
    title="Cakra API",
    version="1.0.0",
    description=(
        "Intake of ETLE camera captures and status of violations and notices. Authenticate with "
        "`Authorization: Bearer <API key>` (keys are created with `cakra apikey create`). Every error "
        'answers `{"error": {"code": ..., "message": ..., "field": ...}}`.'
    ),
    urls_namespace="api",
    docs_url=None,
    # The schema is read-only: other methods get the JSON 405 like every route.
    docs_decorator=require_safe,
    parser=StrictJsonParser(),
)
install_error_handlers(api)
api.add_router("/", router)
api.add_router("/", receipts_router)
api.add_router("/", whatsapp_router)
api.add_router("/", sms_callbacks_router)
api.add_router("/", fallback_router)  # last: catches every other path


View = Callable[..., HttpResponseBase]


def _answer_405_in_json(view: View, *, unknown: bool) -> View:
    """``view`` with django-ninja's plain-text 405 replaced by the API's JSON one.

    ninja answers a method no operation of the path declares with a 405 whose
    ``Allow`` lists the methods of every operation on that path. Each path
    declares only the methods it supports, so that list is exact; only the
    body is ninja's plain text. On the catch-all path of unknown resources,
    an unusual method is still a 404: there is no resource to list methods for.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        if unknown:
            return api.create_response(request, error_body(code="not_found", message=NOT_FOUND_MESSAGE), status=404)
        allowed = [method.strip() for method in response["Allow"].split(",") if method.strip()]
        return method_not_allowed_response(request, api=api, allowed=allowed)

    return wrapper


def api_urls() -> tuple[list[URLResolver | URLPattern], str, str]:
    """``api.urls`` for the URL map, every route answering an unsupported method in JSON."""
    patterns, app_name, namespace = api.urls
    wrapped: list[URLResolver | URLPattern] = [
        URLPattern(
            pattern.pattern,
            _answer_405_in_json(pattern.callback, unknown=pattern.name == unknown_path.__name__),
            pattern.default_args,
            pattern.name,
        )
        if isinstance(pattern, URLPattern)
        else pattern
        for pattern in patterns
    ]
    return wrapped, app_name, namespace
