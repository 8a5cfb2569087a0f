"""Reads on violations, notices and evidence.

The API's status views load through these functions only: scoped to the
caller's region, with one "not found" for an unknown id, a malformed id and
another region's record alike (no enumeration oracle).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Prefetch

from cakra.delivery.models import Delivery
from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.models import Evidence, Notice, Violation
from cakra.enforcement.numbers import notice_number_clean
from cakra.security.identifiers import ascii_uuid_parse


def violation_get_for_region(*, region_id: int, violation_id: str) -> Violation:
    pk = ascii_uuid_parse(violation_id)
    if pk is None:
        raise NotFoundError("violation not found")
    violation = Violation.objects.select_related("article").filter(pk=pk, region_id=region_id).first()
    if violation is None:
        raise NotFoundError("violation not found")
    return violation


def notice_get_for_region(*, region_id: int, number: str) -> Notice:
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


def evidence_ids_awaiting_derivation(
    *, received_after: datetime, received_before: datetime, limit: int
) -> list[uuid.UUID]:
    """Evidence whose derivative was never produced (a lost task), oldest first;
    never an image marked failed (its attempts are used up)."""
    return list(
        Evidence.objects.filter(
            derived_at__isnull=True,
            derive_failed_at__isnull=True,
            violation__received_at__gt=received_after,
            violation__received_at__lt=received_before,
        )
        .order_by("violation__received_at")
        .values_list("id", flat=True)[:limit]
    )
