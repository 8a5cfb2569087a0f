"""An officer's decisions on a violation of their region.

Validating issues the notice in the same transaction: enforcement moves the
violation from received to validated (one conditional UPDATE, so two
officers cannot both validate it), then ``cakra.delivery.services`` issues the
notice and plans its deliveries, with the validation's event in the issue's
one audit append. Rejecting issues nothing: it is enforcement's alone
(``cakra.enforcement.services.violation_reject``).
"""

from __future__ import annotations

from uuid import UUID

from django.db import transaction

from cakra.backoffice.models import Officer
from cakra.delivery.services import notices_issue
from cakra.enforcement.models import Notice
from cakra.enforcement.services import violation_mark_validated


@transaction.atomic
def violation_validate(*, officer: Officer, violation_id: UUID | str) -> Notice:
    """Validate a received violation of the officer's region and issue its
    notice. Raises NotFoundError (unknown id and another region's alike),
    InvalidStateError (already decided) or NoRegistryMatchError."""
    violation, validated = violation_mark_validated(officer=officer, violation_id=violation_id)
    (notice,) = notices_issue(
        violations=[violation], actor_type="officer", actor_id=str(officer.pk), audit_first=validated
    )
    return notice
