"""The public JSON API (django-ninja); OpenAPI 3 at /api/v1/openapi.json.

The interactive docs page is off: it loads scripts from a CDN, which the
Content-Security-Policy (``default-src 'none'``) rightly blocks. The JSON
schema is what clients generate code from.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.parser import Parser

from cakra.api.body import strict_json_loads
from cakra.api.endpoints import fallback_router, router
from cakra.api.errors import install_error_handlers
from cakra.api.receipts import router as receipts_router


class StrictJsonParser(Parser):
    """Standard JSON only: no NaN/Infinity, no duplicate keys."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
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
    parser=StrictJsonParser(),
)
install_error_handlers(api)
api.add_router("/", router)
api.add_router("/", receipts_router)
api.add_router("/", fallback_router)  # last: catches every other path
