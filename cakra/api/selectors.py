"""Reads of the API: API keys (never the secret: only its hash is stored
anyway) and a region's notice with its delivery steps."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from cakra.api.models import ApiKey
from cakra.delivery.models import Delivery
from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.models import Notice
from cakra.enforcement.numbers import notice_number_clean


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


def notice_get_for_region(*, region_id: int, number: str) -> Notice:
    """A notice of the caller's region with its delivery steps in order, for
    ``GET /api/v1/notices/{number}``: one "not found" for an unknown, a
    malformed and another region's number alike."""
    cleaned = notice_number_clean(number)
    if not cleaned:
        raise NotFoundError("notice not found")
    notice = (
        Notice.objects.select_related("article")
        .prefetch_related(Prefetch("deliveries", queryset=Delivery.objects.order_by("step")))
        .filter(number=cleaned, region_id=region_id)
        .first()
    )
    if notice is None:
        raise NotFoundError("notice not found")
    return notice
