"""Writes on violations and notices: validation, rejection, notice issue.

Every function here runs in one transaction with its audit event, and
schedules side effects (sending) only after commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_record
from cakra.backoffice.models import Officer
from cakra.db import rows_insert
from cakra.delivery.services import delivery_plans_create
from cakra.enforcement.deadlines import confirmation_deadline
from cakra.enforcement.errors import InvalidStateError, NoRegistryMatchError, NotFoundError
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.numbers import notice_number_generate, verification_code_generate
from cakra.registry.models import Vehicle
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


def _notices_build(
    *, violations: Sequence[Violation], issued_at: datetime, owners: Mapping[UUID, UUID] | None
) -> list[Notice]:
    if owners is None:
        owners = dict(Vehicle.objects.filter(pk__in={v.vehicle_id for v in violations}).values_list("pk", "owner_id"))
    notices = []
    for violation in violations:
        vehicle_id = violation.vehicle_id
        assert vehicle_id is not None  # noqa: S101 - notices_issue checked every one
        code = verification_code_generate()
        number = notice_number_generate()
        notices.append(
            Notice(
                number=number,
                violation=violation,
                region=violation.region,
                vehicle_id=vehicle_id,
                owner_id=owners[vehicle_id],
                article=violation.article,
                fine_amount=violation.article.max_fine,
                issued_at=issued_at,
                confirm_by=confirmation_deadline(
                    region=violation.region, captured_at=violation.captured_at, issued_at=issued_at
                ),
                verification_code_hash=verification_code_hash(number=number, code=code),
                verification_code=code,
            )
        )
    return notices


def notices_issue(
    *,
    violations: Sequence[Violation],
    actor_type: str,
    actor_id: str,
    owners: Mapping[UUID, UUID] | None = None,
    audit_first: Sequence[AuditEntry] = (),
) -> list[Notice]:
    """Issue the notices of validated violations, with their delivery plans:
    one insert per table and one audit append for all of them. Call inside
    the validating transaction.

    ``owners`` (vehicle id -> owner id), when the caller already read them,
    saves a query. ``audit_first`` are the caller's own events of the same
    transaction (the violations received, validated): they are appended
    together with the notices' in one append, before them.
    """
    for violation in violations:
        if violation.vehicle_id is None:
            raise NoRegistryMatchError("no vehicle in the registry matches this plate", field="plate")
    issued_at = timezone.now()
    for _ in range(5):  # a collision in 10^14 is already unlikely; five is paranoia
        notices = _notices_build(violations=violations, issued_at=issued_at, owners=owners)
        try:
            with transaction.atomic():
                rows_insert(notices)
            break
        except IntegrityError:
            if Notice.objects.filter(violation__in=violations).exists():
                raise InvalidStateError("a notice was already issued for this violation") from None
    else:
        msg = "could not allocate unique notice numbers"
        raise RuntimeError(msg)
    # The plans' events go in the same append as the notices' (and the
    # caller's): one move of the audit chain's head for the whole issue.
    delivery_plans_create(
        notices=notices,
        audit_first=[
            *audit_first,
            *(
                AuditEntry(
                    actor_type=actor_type,
                    actor_id=actor_id,
                    action="notice.issued",
                    object_type="notice",
                    object_id=str(notice.id),
                    region_code=notice.region.code,
                    data={
                        "violation": str(notice.violation_id),
                        "article": notice.article.code,
                        "fine": notice.fine_amount,
                    },
                )
                for notice in notices
            ),
        ],
    )
    return notices


def notice_issue(*, violation: Violation, actor_type: str, actor_id: str) -> Notice:
    """Issue the notice for a validated violation. Call inside the validating transaction."""
    return notices_issue(violations=[violation], actor_type=actor_type, actor_id=actor_id)[0]


@transaction.atomic
def violation_validate(*, officer: Officer, violation_id: UUID | str) -> Notice:
    violation = _officer_violation_for_update(officer=officer, violation_id=violation_id)
    return _validate(violations=[violation], actor_type="officer", actor_id=str(officer.pk), officer=officer)[0]


def violations_validate_pre_validated(*, violations: Sequence[Violation]) -> list[Notice]:
    """Issue at once for a pre-validated API key; violations without a
    registry match wait in the officers' queue instead. Call inside the
    intake transaction."""
    matched = [violation for violation in violations if violation.vehicle_id is not None]
    if not matched:
        return []
    key_id = str(matched[0].source_key_id or "")
    return _validate(violations=matched, actor_type="api_key", actor_id=key_id, officer=None)


def violation_validate_pre_validated(*, violation: Violation) -> Notice | None:
    notices = violations_validate_pre_validated(violations=[violation])
    return notices[0] if notices else None


def violations_issue_received_validated(
    *, violations: Sequence[Violation], owners: Mapping[UUID, UUID], audit_first: Sequence[AuditEntry] = ()
) -> list[Notice]:
    """Issue the notices of violations a pre-validated key's intake has just
    inserted already validated, in this transaction (status validated,
    ``pre_validated``, ``decided_at`` set; each with a registry match).

    What ``violations_validate_pre_validated`` does for stored violations,
    without its conditional UPDATE: nobody else can see, let alone decide,
    rows this transaction has not committed, and updating every row just
    inserted would write each violation and all its index entries twice.
    ``owners``: vehicle id -> owner id; ``audit_first``: the intake's own
    events, appended with the validations and notices in one append.
    """
    for violation in violations:
        if violation.status != Violation.Status.VALIDATED or not violation.pre_validated or not violation.decided_at:
            raise InvalidStateError(f"violation {violation.pk} was not received validated")
    if not violations:
        return []
    key_id = str(violations[0].source_key_id or "")
    return notices_issue(
        violations=violations,
        actor_type="api_key",
        actor_id=key_id,
        owners=owners,
        audit_first=[*audit_first, *_validated_entries(violations=violations, actor_type="api_key", actor_id=key_id)],
    )


def _validated_entries(*, violations: Sequence[Violation], actor_type: str, actor_id: str) -> list[AuditEntry]:
    return [
        AuditEntry(
            actor_type=actor_type,
            actor_id=actor_id,
            action="violation.validated",
            object_type="violation",
            object_id=str(violation.id),
            region_code=violation.region.code,
            data={"pre_validated": violation.pre_validated},
        )
        for violation in violations
    ]


def _validate(
    *, violations: Sequence[Violation], actor_type: str, actor_id: str, officer: Officer | None
) -> list[Notice]:
    for violation in violations:
        if violation.status != Violation.Status.RECEIVED:
            raise InvalidStateError(f"violation is already {violation.status}")
    now = timezone.now()
    changed = Violation.objects.filter(
        pk__in=[violation.pk for violation in violations], status=Violation.Status.RECEIVED
    ).update(status=Violation.Status.VALIDATED, decided_at=now, decided_by=officer, pre_validated=officer is None)
    if changed != len(violations):
        raise InvalidStateError("violation was decided concurrently")
    for violation in violations:  # what the UPDATE wrote, without reading it back
        violation.status, violation.decided_at = Violation.Status.VALIDATED, now
        violation.decided_by, violation.pre_validated = officer, officer is None
    return notices_issue(
        violations=violations,
        actor_type=actor_type,
        actor_id=actor_id,
        audit_first=_validated_entries(violations=violations, actor_type=actor_type, actor_id=actor_id),
    )


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
