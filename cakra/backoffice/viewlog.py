"""Every look at personal data by an officer, in the audit trail (UU PDP: accountability of access).

A page that shows an owner's name, masked identifiers or contacts, or an
evidence photo (a vehicle, often its driver) writes one audit event: who
looked (the officer), at what (the object's id) and which kinds of data the
page showed. Ids and kinds only: the event must not become a second copy of
the data it records access to. The review queue writes none: it lists plates
and places, no owner, and recording every list refresh would bury the
accesses that matter.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import transaction

from cakra.audit.services import audit_event_record
from cakra.backoffice.models import Officer

ACTION = "personal_data.viewed"


class Viewed(StrEnum):
    """Kinds of personal data a back-office page shows."""

    OWNER_IDENTITY = "owner_identity"  # name and kind of the owner
    OWNER_NIK_MASKED = "owner_nik_masked"
    OWNER_CONTACTS_MASKED = "owner_contacts_masked"
    PLATE = "plate"
    EVIDENCE_PHOTO = "evidence_photo"
    DELIVERY_CONTACTS_MASKED = "delivery_contacts_masked"


def personal_data_view_record(
    *, officer: Officer, object_type: str, object_id: str, viewed: list[Viewed], related: dict[str, str] | None = None
) -> None:
    """Append the audit event of one page view; ``related`` adds ids (e.g. the violation of a photo)."""
    region_code = officer.region.code if officer.region is not None else ""
    with transaction.atomic():
        audit_event_record(
            actor_type="officer",
            actor_id=str(officer.pk),
            action=ACTION,
            object_type=object_type,
            object_id=object_id,
            region_code=region_code,
            data={"viewed": sorted(str(kind) for kind in viewed), **(related or {})},
        )
