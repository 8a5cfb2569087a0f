"""Writes on violations and notices: validation, rejection, notice issue.

Every function here runs in one transaction with its audit event, and
schedules side effects (sending) only after commit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from django.db import IntegrityError, connections, models, router, transaction
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_record, audit_record_many
from cakra.backoffice.models import Officer
from cakra.delivery.services import delivery_plans_create
from cakra.enforcement.deadlines import confirmation_deadline
from cakra.enforcement.errors import InvalidStateError, NoRegistryMatchError, NotFoundError
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.numbers import notice_number_generate, verification_code_generate
from cakra.registry.models import Vehicle
from cakra.security.crypto import lookup_hash

MAX_REASON_LENGTH = 1000


# How rows_insert reads each field of a model: the attribute as it is, the
# field's pre_save (automatic timestamps), or Django's whole preparation
# (anything else: encrypted fields, files, fields this does not know).
_PLAIN_FIELDS = (
    models.AutoField,
    models.BigIntegerField,
    models.BooleanField,
    models.CharField,
    models.DateField,
    models.DateTimeField,
    models.DecimalField,
    models.ForeignKey,
    models.IntegerField,
    models.JSONField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.SmallIntegerField,
    models.TextField,
    models.UUIDField,
)


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    fields: tuple[tuple[str, models.Field[Any, Any], str], ...]  # (column, field, how)


@functools.cache
def _insert_plan(model: type[models.Model], alias: str) -> _InsertPlan:
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = []
    for field in model._meta.concrete_fields:  # noqa: SLF001 - Django's public model metadata
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            how = "pre_save"
        elif type(field) in _PLAIN_FIELDS:  # exactly these: a subclass may prepare its values
            how = "plain"
        else:
            how = "prepare"
        fields.append((cast("str", field.column), field, how))  # a concrete field always has its column
    columns = ", ".join(quote(column) for column, _, _ in fields)
    record = ", ".join(f"{quote(column)} {field.db_type(connection)}" for column, field, _ in fields)
    # Identifiers only, from the model and quoted: the rows travel as the one parameter.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "  # noqa: S608, SLF001
        f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS rows({record})"
    )
    return _InsertPlan(sql=sql, fields=tuple(fields))


def rows_insert(objs: Sequence[models.Model]) -> None:
    """``bulk_create(objs)`` for new rows of one model whose primary keys are set, in one statement.

    On PostgreSQL the rows travel as one JSON document expanded by the
    server (``jsonb_to_recordset``): Django's ``bulk_create`` spends ~40 µs
    per row of a twenty-column table preparing each value through the
    field's layers and dumping the columns into arrays, against ~15 µs
    here (measured, 100 violations). Values are what the fields would
    store: plain values as they are (UUIDs, decimals and aware datetimes as
    their text, which the server parses), automatic timestamps from the
    field's ``pre_save``, anything else (encrypted fields, files) through
    Django's own preparation. The objects are marked saved, as
    ``bulk_create`` marks them. Other databases (the embedded SQLite) take
    ``bulk_create``. Call inside the caller's transaction.
    """
    if not objs:
        return
    model = type(objs[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql" or any(obj.pk is None for obj in objs):
        model._default_manager.bulk_create(objs)  # noqa: SLF001 - Django's documented manager access
        return
    plan = _insert_plan(model, alias)
    rows = []
    for obj in objs:
        row: dict[str, Any] = {}
        for column, field, how in plan.fields:
            if how == "plain":
                row[column] = getattr(obj, field.attname)
            elif how == "pre_save":
                row[column] = field.pre_save(obj, add=True)
            else:
                row[column] = field.get_db_prep_save(field.pre_save(obj, add=True), connection)
        rows.append(row)
    with connection.cursor() as cursor:
        # default=str: UUIDs, decimals, dates and aware datetimes as the text PostgreSQL reads back.
        cursor.execute(plan.sql, [json.dumps(rows, default=str)])
    for obj in objs:
        obj._state.adding = False  # noqa: SLF001 - what bulk_create does to the objects it saved
        obj._state.db = alias  # noqa: SLF001


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
    audit_record_many(
        [
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
        ]
    )
    delivery_plans_create(notices=notices)
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
