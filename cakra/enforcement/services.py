"""Writes on violations and notices: decisions, notice construction, the notice's lifecycle.

Issuing a notice also plans its deliveries, which is delivery's: the one
function that issues is ``cakra.delivery.services.notices_issue``, and it calls
``notices_create`` here. Functions that return audit entries leave the
append to their caller, so that one issue moves the audit chain's head once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_event_record
from cakra.db import rows_insert, update_returning_pks
from cakra.enforcement.deadlines import confirmation_deadline
from cakra.enforcement.errors import InvalidStateError, NoRegistryMatchError, NotFoundError
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.numbers import notice_number_generate, verification_code_generate
from cakra.registry.models import Vehicle
from cakra.security.crypto import lookup_hash

MAX_REASON_LENGTH = 1000


class Decider(Protocol):
    """Who decides on a violation: an officer of one region (the back office's user)."""

    @property
    def pk(self) -> Any: ...

    @property
    def region_id(self) -> int | None: ...


def verification_code_hash(*, number: str, code: str) -> str:
    return lookup_hash(f"{number}:{code.upper()}", purpose="notice-verification-code")


def _officer_violation_for_update(*, officer: Decider, violation_id: UUID | str) -> Violation:
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
        assert vehicle_id is not None  # noqa: S101 - notices_create checked every one
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


def notices_create(
    *,
    violations: Sequence[Violation],
    actor_type: str,
    actor_id: str,
    owners: Mapping[UUID, UUID] | None = None,
) -> tuple[list[Notice], list[AuditEntry]]:
    """Insert the notices of validated violations (one insert for all of
    them): number, verification code, fine and deadline. Returns the notices
    and their ``notice.issued`` events, for the caller to append with the
    rest of the issue. Call inside the validating transaction, through
    ``cakra.delivery.services.notices_issue``, which also plans the deliveries.

    ``owners`` (vehicle id -> owner id), when the caller already read them,
    saves a query.
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
    entries = [
        AuditEntry(
            actor_type=actor_type,
            actor_id=actor_id,
            action="notice.issued",
            object_type="notice",
            object_id=str(notice.id),
            region_code=notice.region.code,
            data={"violation": str(notice.violation_id), "article": notice.article.code, "fine": notice.fine_amount},
        )
        for notice in notices
    ]
    return notices, entries


def violation_mark_validated(*, officer: Decider, violation_id: UUID | str) -> tuple[Violation, list[AuditEntry]]:
    """An officer's validation: received -> validated with one conditional
    UPDATE. Returns the violation as updated and its ``violation.validated``
    event, for the caller to append with the notice's; call inside the
    transaction that issues the notice (``cakra.backoffice.decisions``)."""
    violation = _officer_violation_for_update(officer=officer, violation_id=violation_id)
    if violation.status != Violation.Status.RECEIVED:
        raise InvalidStateError(f"violation is already {violation.status}")
    now = timezone.now()
    changed = Violation.objects.filter(pk=violation.pk, status=Violation.Status.RECEIVED).update(
        status=Violation.Status.VALIDATED, decided_at=now, decided_by_id=officer.pk, pre_validated=False
    )
    if changed != 1:
        raise InvalidStateError("violation was decided concurrently")
    # What the UPDATE wrote, without reading it back.
    violation.status, violation.decided_at = Violation.Status.VALIDATED, now
    violation.decided_by_id, violation.pre_validated = officer.pk, False
    return violation, _validated_entries(violations=[violation], actor_type="officer", actor_id=str(officer.pk))


def violations_received_validated(*, violations: Sequence[Violation]) -> list[AuditEntry]:
    """The validation of violations a pre-validated key's intake has just
    inserted already validated, in this transaction (status validated,
    ``pre_validated``, ``decided_at`` set): their ``violation.validated``
    events, for the intake's one append.

    No UPDATE: nobody else can see, let alone decide, rows this transaction
    has not committed, and updating every row just inserted would write each
    violation and all its index entries twice.
    """
    for violation in violations:
        if violation.status != Violation.Status.VALIDATED or not violation.pre_validated or not violation.decided_at:
            raise InvalidStateError(f"violation {violation.pk} was not received validated")
    if not violations:
        return []
    return _validated_entries(
        violations=violations, actor_type="api_key", actor_id=str(violations[0].source_key_id or "")
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


def notices_mark_notified(*, notice_ids: Collection[Any]) -> list[Any]:
    """issued -> notified, for notices a provider has accepted a first
    message of: one conditional UPDATE, so a notice moves once however many
    of its messages are accepted. Returns the primary keys of the notices
    this call moved; the caller appends their ``notice.notified`` events
    (which name the delivery that notified) in its own append. Call inside
    the transaction that records the send."""
    if not notice_ids:
        return []
    return update_returning_pks(
        Notice.objects.filter(pk__in=list(notice_ids), status=Notice.Status.ISSUED), status=Notice.Status.NOTIFIED
    )


@transaction.atomic
def violation_reject(*, officer: Decider, violation_id: UUID | str, reason: str) -> Violation:
    reason = reason.strip()
    if not reason:
        raise InvalidStateError("a reason is required to reject a violation", field="reason")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidStateError(f"the reason is longer than {MAX_REASON_LENGTH} characters", field="reason")
    violation = _officer_violation_for_update(officer=officer, violation_id=violation_id)
    changed = Violation.objects.filter(pk=violation.pk, status=Violation.Status.RECEIVED).update(
        status=Violation.Status.REJECTED, decided_at=timezone.now(), decided_by_id=officer.pk, rejection_reason=reason
    )
    if changed != 1:
        raise InvalidStateError(f"violation is already {violation.status}")
    audit_event_record(
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
