"""Reads for the citizen portal.

There is one way to load a notice or its evidence for a citizen, and it only
answers for a notice this browser session was granted: "doesn't exist",
"not granted" and "grant expired" all look the same (``None``).
"""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from cakra.enforcement.models import Evidence, Notice, Region

# Compared against the typed plate when the number is unknown, so the unknown
# path does the same comparison as the wrong-plate path. No real plate is
# empty, so this never matches.
_NO_PLATE = "\x00" * 12


def region_list_for_senders() -> QuerySet[Region]:
    """Every region with the sender identities citizens are told to trust."""
    return Region.objects.order_by("name").only(
        "name", "whatsapp_sender", "whatsapp_display_name", "sms_sender_id", "email_from_address", "email_from_name"
    )


def notice_match_lookup(*, number: str) -> tuple[uuid.UUID | None, str]:
    """The notice id and registered compact plate for ``number``, or ``(None, <never-matching plate>)``.

    Reads two plain columns only: loading the model would decrypt the
    verification code for existing numbers, a timing difference between
    "unknown number" and "wrong plate".
    """
    row = Notice.objects.filter(number=number).values_list("id", "vehicle__plate_compact").first()
    if row is None:
        return None, _NO_PLATE
    # A notice whose link to a vehicle the retention schedule removed matches no plate.
    return row[0], row[1] or _NO_PLATE


def notice_get_for_citizen(*, notice_id: uuid.UUID, granted: bool) -> Notice | None:
    if not granted:
        return None
    return (
        Notice.objects.select_related("violation", "article", "vehicle", "region")
        .filter(pk=notice_id, vehicle__isnull=False)
        .first()
    )


def evidence_list_for_notice(*, notice: Notice) -> list[Evidence]:
    return list(
        Evidence.objects.filter(violation_id=notice.violation_id)
        .order_by("position")
        .only(
            "id",
            "position",
            "kind",
            "width",
            "height",
            "derivative",
            "derive_failed_at",
            "derive_requested_at",
            "violation_id",
        )
    )


def evidence_get_for_citizen(*, notice_id: uuid.UUID, evidence_id: uuid.UUID, granted: bool) -> Evidence | None:
    """Evidence of the granted notice's own violation, and only once derived."""
    if not granted:
        return None
    return (
        Evidence.objects.filter(pk=evidence_id, violation__notice__id=notice_id)
        .exclude(derivative="")
        .only("id", "derivative")
        .first()
    )
