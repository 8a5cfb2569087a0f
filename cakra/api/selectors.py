"""Reads on API keys (never the secret: only its hash is stored anyway)."""

from __future__ import annotations

from django.db.models import QuerySet

from cakra.api.models import ApiKey


def apikey_list(*, region_code: str = "") -> QuerySet[ApiKey]:
    keys = ApiKey.objects.select_related("region").order_by("region__code", "created_at")
    if region_code:
        keys = keys.filter(region__code=region_code)
    return keys


def apikey_get_active(*, prefix: str) -> ApiKey | None:
    """The active (not revoked) key with this prefix, its region loaded; None otherwise.

    For operators' commands that act in a key's name (``cakra import
    violations``): the token's secret is not needed, the shell account is
    the authority.
    """
    return ApiKey.objects.select_related("region").filter(prefix=prefix, revoked_at__isnull=True).first()
