"""Template context shared by citizen-facing pages: the official identity to trust."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def official_identity(request: HttpRequest) -> dict[str, str]:
    return {
        "official_domain": settings.CAKRA_OFFICIAL_DOMAIN,
        "portal_base_url": settings.CAKRA_PORTAL_BASE_URL,
        # Where the language switch returns to: this page, without its query
        # string (a page that needs its query back passes its own value).
        "language_next": request.path,
    }
