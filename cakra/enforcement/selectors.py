"""Reads on violations and evidence.

Region-scoped reads answer one "not found" for an unknown id, a malformed id
and another region's record alike (no enumeration oracle).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.models import Evidence, Violation
from cakra.security.identifiers import ascii_uuid_parse


def violation_get_for_region(*, region_id: int, violation_id: str) -> Violation:
    pk = ascii_uuid_parse(violation_id)
    if pk is None:
        raise NotFoundError("violation not found")
    violation = Violation.objects.select_related("article").filter(pk=pk, region_id=region_id).first()
    if violation is None:
        raise NotFoundError("violation not found")
    return violation


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
