"""The bulk-SQL helpers against the ORM, over generated rows, on the database the run uses.

Three helpers write SQL of their own for speed: :func:`cakra.db.rows_insert`
(one ``INSERT … SELECT FROM jsonb_to_recordset`` on PostgreSQL, instead of
``bulk_create``), :func:`cakra.db.update_returning_pks` (``UPDATE …
RETURNING``, instead of ``QuerySet.update``) and
:func:`cakra.delivery.states.delivery_transition_many` (one conditional
UPDATE for many rows, each with its own values, instead of one ``update``
per row). For generated rows, each must leave the same rows as the ORM
does and report the same rows; where the ORM's write fails (a NUL in a text
column on PostgreSQL, a value out of a column's range) the helper's must
fail too. Each side runs in a savepoint that is rolled back, on the same
starting rows.

``make test`` runs this file on SQLite (where ``rows_insert`` is
``bulk_create`` itself) and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, models, transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cakra.audit.models import AuditEvent
from cakra.db import rows_insert, update_returning_pks
from cakra.delivery.models import Delivery
from cakra.delivery.states import delivery_transition_many
from cakra.enforcement.models import Article, Notice, Violation

pytestmark = pytest.mark.django_db

DIFFERENTIAL = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    # The database fixtures are function-scoped on purpose: every example
    # works in savepoints of the test's transaction and rolls them back.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text of any kind: NUL included (PostgreSQL refuses it in text, both ways),
# no lone surrogates (no driver can send them).
TEXT_CHARACTERS = st.characters(exclude_categories=["Cs"])


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(TEXT_CHARACTERS, max_size=max_size)


# Aware datetimes with microseconds, in zones with any offset.
MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone.get_fixed_timezone(7 * 60), timezone.get_fixed_timezone(-(9 * 60 + 30))]),
)
SMALL = st.integers(min_value=0, max_value=32767)
STATUSES = st.sampled_from(Delivery.Status.values)


def _coordinate(limit: int) -> st.SearchStrategy[Decimal | None]:
    return st.one_of(
        st.none(),
        st.decimals(min_value=-limit, max_value=limit, places=6, allow_nan=False, allow_infinity=False),
    )


class _Outcome:
    """What one side did: its result and the rows it left, or the error it raised."""

    def __init__(self, result: Any = None, rows: Any = None, error: BaseException | None = None) -> None:
        self.result, self.rows, self.error = result, rows, error


def _attempt(action: Callable[[], tuple[Any, Any]]) -> _Outcome:
    """Run ``action`` (returning its result and a snapshot of the rows) in a
    savepoint that is rolled back whatever happens."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                result, rows = action()
        except (DatabaseError, ValueError) as exc:
            outcome = _Outcome(error=exc)
        else:
            outcome = _Outcome(result=result, rows=rows)
        transaction.set_rollback(True)
    return outcome


@contextmanager
def _rolled_back() -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def _row_values(obj: models.Model, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        field.attname: getattr(obj, field.attname)
        for field in type(obj)._meta.concrete_fields
        if field.attname not in leave_out
    }


def _assert_same_outcome(orm: _Outcome, helper: _Outcome) -> None:
    assert (orm.error is None) == (helper.error is None), (orm.error, helper.error)
    event("written" if orm.error is None else "refused by both")  # shown by --hypothesis-show-statistics
    if orm.error is None:
        assert helper.rows == orm.rows
        assert helper.result == orm.result


# --- rows_insert against bulk_create -----------------------------------------------

VIOLATION_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "capture_id": _text(60),
            "payload_hash": _text(64),
            "camera_id": _text(64),
            "captured_at": MOMENTS,
            "location": _text(200),
            "latitude": _coordinate(90),
            "longitude": _coordinate(180),
            "plate": _text(16),
            "plate_compact": _text(12),
            "measured_speed_kmh": st.one_of(st.none(), SMALL),
            "speed_limit_kmh": st.one_of(st.none(), SMALL),
            "status": st.sampled_from(Violation.Status.values),
            "decided_at": st.one_of(st.none(), MOMENTS),
            "pre_validated": st.booleans(),
            "rejection_reason": _text(300),
        }
    ),
    min_size=1,
    max_size=6,
)


def _violations(rows: list[dict[str, Any]], *, region, vehicle, ids: list[uuid.UUID]) -> list[Violation]:
    article = Article.objects.get(code="287(1)")
    return [
        # The capture id made unique per region, as the constraint asks.
        Violation(
            id=pk,
            region=region,
            article=article,
            vehicle_id=vehicle.pk,
            **{**row, "capture_id": f"{n}:{row['capture_id']}"},
        )
        for n, (pk, row) in enumerate(zip(ids, rows, strict=True))
    ]


@DIFFERENTIAL
@given(rows=VIOLATION_ROWS)
def test_rows_insert_stores_the_rows_bulk_create_stores(region, vehicle, rows):
    ids = [uuid.uuid4() for _ in rows]
    started = timezone.now()

    def insert(write: Callable[[list[Violation]], object]) -> Callable[[], tuple[Any, Any]]:
        def action() -> tuple[Any, Any]:
            objs = _violations(rows, region=region, vehicle=vehicle, ids=ids)
            write(objs)
            stored = {obj.pk: obj for obj in Violation.objects.filter(pk__in=ids)}
            for obj in objs:
                assert started <= stored[obj.pk].received_at <= timezone.now()  # the automatic timestamp
            state = [(obj.pk, obj._state.adding, obj._state.db) for obj in objs]
            return state, [_row_values(stored[pk], leave_out=("received_at",)) for pk in ids]

        return action

    _assert_same_outcome(
        _attempt(insert(Violation.objects.bulk_create)),
        _attempt(insert(rows_insert)),
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text(20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text(8), children, max_size=4),
    max_leaves=10,
)
AUDIT_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "created_at": MOMENTS,
            "actor_type": _text(16),
            "actor_id": _text(64),
            "action": _text(64),
            "object_type": _text(32),
            "object_id": _text(64),
            "region_code": _text(8),
            "data": st.dictionaries(_text(8), JSON, max_size=5),
            "prev_hash": _text(64),
            "hash": _text(64),
        }
    ),
    min_size=1,
    max_size=6,
)


@DIFFERENTIAL
@given(rows=AUDIT_ROWS)
def test_rows_the_database_numbers_are_stored_and_numbered_as_bulk_create_does(rows):
    def insert(write: Callable[[list[AuditEvent]], object]) -> Callable[[], tuple[Any, Any]]:
        def action() -> tuple[Any, Any]:
            objs = [AuditEvent(chain=999, seq=seq, **row) for seq, row in enumerate(rows, start=1)]
            write(objs)
            keys = [obj.pk for obj in objs]
            assert keys == sorted(keys)  # numbered in the objects' order
            stored = {event.pk: event for event in AuditEvent.objects.filter(pk__in=keys)}
            # The keys differ from one side to the other (a sequence is not
            # rolled back): each object must hold the key of its own row.
            return [obj._state.adding for obj in objs], [_row_values(stored[key], leave_out=("id",)) for key in keys]

        return action

    _assert_same_outcome(
        _attempt(insert(AuditEvent.objects.bulk_create)),
        _attempt(insert(rows_insert)),
    )


NOTICE_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "number": _text(16),
            "fine_amount": st.integers(min_value=0, max_value=2**31 - 1),
            "status": st.sampled_from(Notice.Status.values),
            "issued_at": MOMENTS,
            "confirm_by": st.dates(min_value=date(1970, 1, 1)),
            "verification_code_hash": _text(64),
            # Encrypted: the field's own preparation, bound to the row.
            "verification_code": _text(40),
        }
    ),
    min_size=1,
    max_size=4,
)


@DIFFERENTIAL
@given(rows=NOTICE_ROWS)
def test_rows_with_fields_that_prepare_their_values_read_back_as_bulk_create_stores_them(region, vehicle, rows):
    ids = [uuid.uuid4() for _ in rows]
    with _rolled_back():
        violations = _violations(
            [_plain_violation() for _ in rows], region=region, vehicle=vehicle, ids=[uuid.uuid4() for _ in rows]
        )
        Violation.objects.bulk_create(violations)

        def insert(write: Callable[[list[Notice]], object]) -> Callable[[], tuple[Any, Any]]:
            def action() -> tuple[Any, Any]:
                objs = [
                    Notice(
                        id=pk,
                        violation=violation,
                        region=region,
                        vehicle_id=vehicle.pk,
                        article=violation.article,
                        **row,
                    )
                    for pk, violation, row in zip(ids, violations, rows, strict=True)
                ]
                write(objs)
                stored = {notice.pk: notice for notice in Notice.objects.filter(pk__in=ids)}
                return [obj._state.adding for obj in objs], [_row_values(stored[pk]) for pk in ids]

            return action

        _assert_same_outcome(
            _attempt(insert(Notice.objects.bulk_create)),
            _attempt(insert(rows_insert)),
        )


def _plain_violation() -> dict[str, Any]:
    return {
        "capture_id": uuid.uuid4().hex,
        "payload_hash": "a" * 64,
        "camera_id": "CAM-1",
        "captured_at": timezone.now() - timedelta(hours=1),
        "location": "Jl. Jend. Sudirman",
        "plate": "B 1234 XYZ",
        "plate_compact": "B1234XYZ",
        "status": Violation.Status.VALIDATED,
    }


# --- Deliveries for the two UPDATE helpers --------------------------------------------


def _deliveries(region, vehicle, rows: list[dict[str, Any]], *, notice_status: str) -> list[Delivery]:
    [violation] = _violations([_plain_violation()], region=region, vehicle=vehicle, ids=[uuid.uuid4()])
    violation.save()
    notice = Notice.objects.create(
        number="1234567890123452",
        violation=violation,
        region=region,
        vehicle_id=vehicle.pk,
        article=violation.article,
        fine_amount=500_000,
        status=notice_status,
        issued_at=timezone.now(),
        confirm_by=date(2026, 12, 7),
        verification_code_hash="c" * 64,
        verification_code="ABCD2345",
    )
    deliveries = [Delivery(notice=notice, channel="email", step=step, **row) for step, row in enumerate(rows, start=1)]
    Delivery.objects.bulk_create(deliveries)
    return deliveries


def _delivery_rows(pks: list[Any]) -> dict[Any, dict[str, Any]]:
    return {delivery.pk: _row_values(delivery) for delivery in Delivery.objects.filter(pk__in=pks)}


# The starting rows, written before either side runs: values every database stores.
DELIVERY_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "status": STATUSES,
            "attempt_count": st.integers(min_value=0, max_value=5),
            "provider": st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=32),
            "sent_at": st.one_of(st.none(), MOMENTS),
        }
    ),
    min_size=1,
    max_size=8,
)


@st.composite
def _claims(draw: st.DrawFn) -> dict[str, Any]:
    """A queryset's conditions and the changes of one update, as production makes them."""
    rows = draw(DELIVERY_ROWS)
    picked = draw(st.lists(st.integers(min_value=0, max_value=len(rows) - 1), unique=True))
    statuses = draw(st.lists(STATUSES, min_size=1, unique=True))
    return {
        "rows": rows,
        "picked": picked,
        "statuses": statuses,
        "notice_status": draw(st.sampled_from(Notice.Status.values)),
        # Conditions on the notice: an anti-join, or a filter across the relation (pk IN a subquery).
        "notice_condition": draw(st.sampled_from(["none", "not_cancelled", "across"])),
        # One status for all, or one for the first delivery chosen and another for the rest.
        "status": draw(st.one_of(st.tuples(STATUSES), st.tuples(STATUSES, STATUSES))),
        "attempt_change": draw(st.integers(min_value=-1, max_value=1)),
        "updated_at": draw(MOMENTS),
        "last_error": draw(st.one_of(st.none(), _text(200))),
    }


@DIFFERENTIAL
@given(claim=_claims())
def test_update_returning_pks_changes_and_reports_the_rows_update_changes(region, vehicle, claim):
    with _rolled_back():
        deliveries = _deliveries(region, vehicle, claim["rows"], notice_status=claim["notice_status"])
        pks = [delivery.pk for delivery in deliveries]
        chosen = [pks[n] for n in claim["picked"]]

        def queryset() -> models.QuerySet[Delivery]:
            found = Delivery.objects.filter(pk__in=chosen, status__in=claim["statuses"])
            if claim["notice_condition"] == "not_cancelled":
                cancelled = Notice.objects.filter(pk=OuterRef("notice_id"), status=Notice.Status.CANCELLED)
                found = found.filter(~Exists(cancelled))
            elif claim["notice_condition"] == "across":
                found = found.exclude(notice__status=Notice.Status.CANCELLED)
            return found

        def changes() -> dict[str, Any]:
            first, *rest = claim["status"]
            values: dict[str, Any] = {
                "status": Case(
                    When(pk__in=chosen[:1], then=Value(first)), default=Value(rest[0]), output_field=models.CharField()
                )
                if rest
                else Value(first),
                "attempt_count": F("attempt_count") + claim["attempt_change"],
                "updated_at": claim["updated_at"],
            }
            if claim["last_error"] is not None:
                values["last_error"] = claim["last_error"]
            return values

        def orm() -> tuple[Any, Any]:
            matched = sorted(queryset().values_list("pk", flat=True))
            changed = queryset().update(**changes())
            assert changed == len(matched)
            return matched, _delivery_rows(pks)

        def helper() -> tuple[Any, Any]:
            returned = update_returning_pks(queryset(), **changes())
            assert all(isinstance(pk, uuid.UUID) for pk in returned)
            assert len(set(returned)) == len(returned)
            return sorted(returned), _delivery_rows(pks)

        _assert_same_outcome(_attempt(orm), _attempt(helper))


# --- delivery_transition_many against one update per delivery -----------------------

TRANSITION_COLUMNS = {
    "sent_at": st.one_of(st.none(), MOMENTS),
    "delivered_at": st.one_of(st.none(), MOMENTS),
    "read_at": st.one_of(st.none(), MOMENTS),
    "provider_reference": _text(128),
    "last_error": _text(200),
}
TIMESTAMPS = ["sent_at", "delivered_at", "read_at"]


@st.composite
def _transitions(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(DELIVERY_ROWS)
    picked = draw(st.lists(st.integers(min_value=0, max_value=len(rows) - 1), unique=True))
    # Every row the same columns (PostgreSQL's JSON document form), or each its own (the CASE form).
    uniform = draw(st.booleans())
    shared = draw(st.lists(st.sampled_from(sorted(TRANSITION_COLUMNS)), unique=True))
    changes = []
    for _ in [*picked, "unknown id"]:
        names = shared if uniform else draw(st.lists(st.sampled_from(sorted(TRANSITION_COLUMNS)), unique=True))
        changes.append({name: draw(TRANSITION_COLUMNS[name]) for name in names})
    return {
        "rows": rows,
        "picked": picked,
        "changes": changes,
        "from_states": frozenset(draw(st.lists(STATUSES, min_size=1, unique=True))),
        "to": draw(STATUSES),
        "keep_existing": draw(st.lists(st.sampled_from(TIMESTAMPS), unique=True)),
        "common": draw(st.one_of(st.none(), st.fixed_dictionaries({"provider": _text(32)}))),
    }


@DIFFERENTIAL
@given(transition=_transitions())
def test_delivery_transition_many_moves_the_rows_one_update_per_delivery_moves(region, vehicle, transition):
    with _rolled_back():
        deliveries = _deliveries(region, vehicle, transition["rows"], notice_status=Notice.Status.ISSUED)
        pks = [delivery.pk for delivery in deliveries]
        # The last change names a delivery that does not exist: nothing moves for it.
        targets = [*(pks[n] for n in transition["picked"]), uuid.uuid4()]
        changes = dict(zip(targets, transition["changes"], strict=True))
        keep_existing, common = transition["keep_existing"], transition["common"] or {}
        before = timezone.now()

        def orm() -> tuple[Any, Any]:
            moved = set()
            for pk, row in changes.items():
                values = {
                    name: Coalesce(F(name), Value(value, output_field=_field(name))) if name in keep_existing else value
                    for name, value in row.items()
                }
                if Delivery.objects.filter(pk=pk, status__in=transition["from_states"]).update(
                    status=transition["to"], updated_at=timezone.now(), **values, **common
                ):
                    moved.add(pk)
            return moved, _without_updated_at(pks, moved, before)

        def helper() -> tuple[Any, Any]:
            moved = delivery_transition_many(
                from_states=transition["from_states"],
                to=transition["to"],
                changes=changes,
                keep_existing=keep_existing,
                common=transition["common"],
            )
            return moved, _without_updated_at(pks, moved, before)

        _assert_same_outcome(_attempt(orm), _attempt(helper))


def _field(name: str) -> models.Field[Any, Any]:
    field = Delivery._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _without_updated_at(pks: list[Any], moved: set[Any], since: datetime) -> dict[Any, dict[str, Any]]:
    """The rows, ``updated_at`` checked apart: each side stamps the time it ran."""
    rows = _delivery_rows(pks)
    for pk, row in rows.items():
        updated_at = row.pop("updated_at")
        assert (updated_at >= since) if pk in moved else (updated_at <= since)
    return rows


def test_a_queryset_that_can_match_nothing_updates_nothing_and_costs_no_statement(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert update_returning_pks(Delivery.objects.filter(pk__in=[]), status=Delivery.Status.SENDING) == []
        assert update_returning_pks(Delivery.objects.none(), status=Delivery.Status.SENDING) == []
