"""The public JSON API (django-ninja); OpenAPI 3 at /api/v1/openapi.json.

The interactive docs page is off: it loads scripts from a CDN, which the
Content-Security-Policy (``default-src 'none'``) rightly blocks. The JSON
schema is what clients generate code from.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.parser import Parser

from cakra.api.endpoints import fallback_router, router
from cakra.api.errors import install_error_handlers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a repeated key; refuse the ambiguity.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


class StrictJsonParser(Parser):
    """Standard JSON only: no NaN/Infinity, no duplicate keys."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(
            request.body, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
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
    parser=StrictJsonParser(),
)
install_error_handlers(api)
api.add_router("/", router)
api.add_router("/", fallback_router)  # last: catches every other path
