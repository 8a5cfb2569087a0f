"""Writes on violations and notices: validation, rejection, notice issue.

Every function here runs in one transaction with its audit event, and
schedules side effects (sending) only after commit.
"""

from __future__ import annotations

from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from cakra.audit.services import audit_record
from cakra.backoffice.models import Officer
from cakra.delivery.services import delivery_plan_create
from cakra.enforcement.deadlines import confirmation_deadline
from cakra.enforcement.errors import InvalidStateError, NoRegistryMatchError, NotFoundError
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.numbers import notice_number_generate, verification_code_generate
from cakra.security.crypto import lookup_hash

MAX_REASON_LENGTH = 1000


def verification_code_hash(*, number: str, code: str) -> str:
    return lookup_hash(f"{number}:{code.upper()}", purpose="notice-verification-code")


def _officer_violation_for_update(*, officer: Officer, violation_id: UUID | str) -> Violation:
    """The one way an officer's write loads a violation: same answer for
    "doesn't exist" and "another region's"."""
    if officer.region_id is None:
        raise NotFoundError("violation not found")
    try:
        return Violation.objects.select_for_update().get(pk=violation_id, region_id=officer.region_id)
    except (Violation.DoesNotExist, ValueError) as exc:
        raise NotFoundError("violation not found") from exc


def notice_issue(*, violation: Violation, actor_type: str, actor_id: str) -> Notice:
    """Issue the notice for a validated violation. Call inside the validating transaction."""
    if violation.vehicle_id is None:
        raise NoRegistryMatchError("no vehicle in the registry matches this plate", field="plate")
    vehicle = violation.vehicle
    assert vehicle is not None  # noqa: S101 - narrowed above, for mypy
    region = violation.region
    issued_at = timezone.now()
    code = verification_code_generate()
    notice: Notice | None = None
    for _ in range(5):  # a collision in 10^14 is already unlikely; five is paranoia
        number = notice_number_generate()
        try:
            with transaction.atomic():
                notice = Notice.objects.create(
                    number=number,
                    violation=violation,
                    region=region,
                    vehicle=vehicle,
                    owner_id=vehicle.owner_id,
                    article=violation.article,
                    fine_amount=violation.article.max_fine,
                    issued_at=issued_at,
                    confirm_by=confirmation_deadline(
                        region=region, captured_at=violation.captured_at, issued_at=issued_at
                    ),
                    verification_code_hash=verification_code_hash(number=number, code=code),
                    verification_code=code,
                )
            break
        except IntegrityError:
            if Notice.objects.filter(violation=violation).exists():
                raise InvalidStateError("a notice was already issued for this violation") from None
    if notice is None:
        msg = "could not allocate a unique notice number"
        raise RuntimeError(msg)
    audit_record(
        actor_type=actor_type,
        actor_id=actor_id,
        action="notice.issued",
        object_type="notice",
        object_id=str(notice.id),
        region_code=region.code,
        data={"violation": str(violation.id), "article": violation.article.code, "fine": notice.fine_amount},
    )
    delivery_plan_create(notice=notice)
    return notice


@transaction.atomic
def violation_validate(*, officer: Officer, violation_id: UUID | str) -> Notice:
    violation = _officer_violation_for_update(officer=officer, violation_id=violation_id)
    return _validate(violation=violation, actor_type="officer", actor_id=str(officer.pk), officer=officer)


def violation_validate_pre_validated(*, violation: Violation) -> Notice | None:
    """Issue at once for a pre-validated API key; without a registry match the
    violation waits in the officers' queue instead. Call inside the intake transaction."""
    if violation.vehicle_id is None:
        return None
    key_id = str(violation.source_key_id or "")
    return _validate(violation=violation, actor_type="api_key", actor_id=key_id, officer=None)


def _validate(*, violation: Violation, actor_type: str, actor_id: str, officer: Officer | None) -> Notice:
    if violation.status != Violation.Status.RECEIVED:
        raise InvalidStateError(f"violation is already {violation.status}")
    now = timezone.now()
    changed = Violation.objects.filter(pk=violation.pk, status=Violation.Status.RECEIVED).update(
        status=Violation.Status.VALIDATED,
        decided_at=now,
        decided_by=officer,
        pre_validated=officer is None,
    )
    if changed != 1:
        raise InvalidStateError("violation was decided concurrently")
    violation.refresh_from_db()
    audit_record(
        actor_type=actor_type,
        actor_id=actor_id,
        action="violation.validated",
        object_type="violation",
        object_id=str(violation.id),
        region_code=violation.region.code,
        data={"pre_validated": officer is None},
    )
    return notice_issue(violation=violation, actor_type=actor_type, actor_id=actor_id)


@transaction.atomic
def violation_reject(*, officer: Officer, violation_id: UUID | str, reason: str) -> Violation:
    reason = reason.strip()
    if not reason:
        raise InvalidStateError("a reason is required to reject a violation", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidStateError(f"the reason is longer than {MAX_REASON_LENGTH} characters", field="reason")
    violation = _officer_violation_for_update(officer=officer, violation_id=violation_id)
    changed = Violation.objects.filter(pk=violation.pk, status=Violation.Status.RECEIVED).update(
        status=Violation.Status.REJECTED, decided_at=timezone.now(), decided_by=officer, rejection_reason=reason
    )
    if changed != 1:
        raise InvalidStateError(f"violation is already {violation.status}")
    audit_record(
        actor_type="officer",
        actor_id=str(officer.pk),
        action="violation.rejected",
        object_type="violation",
        object_id=str(violation.id),
        region_code=violation.region.code,
        # The reason may name people: it stays on the violation, not in the audit trail.
        data={},
    )
    violation.refresh_from_db()
    return violation
