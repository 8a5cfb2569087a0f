"""The delivery state machine, and how a provider's receipts move along it.

::

    planned ──(fallback)──▶ pending ──(claim)──▶ sending ──(accepted)──▶ sent ──▶ delivered ──▶ read
                              ▲                     │                      │          (receipts only)
                              └── failed_temporary ◀┤ (retryable)          │
                                                    └──▶ failed_permanent ◀┘ (bounce receipt, or timed out)
                                                         → fallback activates the next planned step

The worker owns everything up to ``sent`` (cakra.delivery.sending: claim,
attempt, outcome). From ``sent`` on, only the provider knows what happened,
and it tells us through receipts, which arrive late, twice, out of order or
not at all. So a receipt may only move a delivery **forward**, by
:data:`STATUS_RANK`:

- ``delivered`` from ``sent``; ``read`` from ``sent`` or ``delivered``
  (WhatsApp may skip "delivered"). Read then delivered stays read;
  delivered then sent stays delivered.
- ``failed`` only while the delivery is ``sent``: a bounce after a
  confirmed delivery is late junk some carriers send and is ignored; a
  bounce of a ``sent`` delivery makes it ``failed_permanent`` and hands the
  notice to fallback.
- ``sent`` reports nothing new: a delivery is found by the reference the
  provider gave when it accepted the message, so it is already ``sent``.
- ``deferred`` is informational (the provider is still trying): recorded,
  no status change.
- ``failed_permanent`` is final for receipts: fallback has moved on, and a
  late "delivered" is kept on the timeline but changes nothing.

Every transition is one conditional UPDATE (:func:`delivery_transition_many`,
for one delivery or a chunk): ``WHERE id IN (…) AND status IN (<allowed
from-states>) RETURNING id``. Whether a delivery moved is what the statement
returned, never a status read earlier, so two workers or two receipts racing
on the same delivery cannot both win.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.models import Field
from django.utils import timezone

from cakra.db import json_document
from cakra.delivery.models import Delivery, DeliveryReceipt

Status = Delivery.Status
Event = DeliveryReceipt.Event

# How far along a delivery is. Equal ranks are alternatives (a delivery
# waiting for its first try or for a retry). failed_permanent ranks last:
# it is final, nothing moves it again.
STATUS_RANK: dict[str, int] = {
    Status.PLANNED: 0,
    Status.PENDING: 1,
    Status.FAILED_TEMPORARY: 1,
    Status.SENDING: 2,
    Status.SENT: 3,
    Status.DELIVERED: 4,
    Status.READ: 5,
    Status.FAILED_PERMANENT: 6,
}


@dataclass(frozen=True, slots=True)
class ReceiptTransition:
    """Where a receipt event moves a delivery, and from which statuses it may."""

    to: str
    from_states: frozenset[str]


# Receipt events that move a delivery. Events not listed here (deferred)
# are informational: recorded, never a transition.
RECEIPT_TRANSITIONS: dict[str, ReceiptTransition] = {
    Event.SENT: ReceiptTransition(to=Status.SENT, from_states=frozenset()),
    Event.DELIVERED: ReceiptTransition(to=Status.DELIVERED, from_states=frozenset({Status.SENT})),
    Event.READ: ReceiptTransition(to=Status.READ, from_states=frozenset({Status.SENT, Status.DELIVERED})),
    Event.FAILED: ReceiptTransition(to=Status.FAILED_PERMANENT, from_states=frozenset({Status.SENT})),
}
INFORMATIONAL_EVENTS = frozenset({Event.DEFERRED})


def receipt_transition(event: str) -> ReceiptTransition | None:
    """The transition a receipt event asks for; None for an informational event."""
    if event in INFORMATIONAL_EVENTS:
        return None
    return RECEIPT_TRANSITIONS[event]


def delivery_transition_many(
    *,
    from_states: frozenset[str],
    to: str,
    changes: Mapping[Any, Mapping[str, Any]],
    keep_existing: Collection[str] = (),
    common: Mapping[str, Any] | None = None,
) -> set[Any]:
    """Move many deliveries to ``to``, in one statement, if at this instant
    their status is one of ``from_states``.

    ``changes`` maps each delivery id to the columns it sets besides the
    status (each row its own values, e.g. its own ``delivered_at``); a column
    in ``keep_existing`` is set only where it is still NULL. ``common`` are
    columns set to the same value on every row (one parameter each, not one
    per row). Returns the ids (as given) of the deliveries that moved: the
    UPDATE's ``RETURNING`` decides, so a delivery another transaction moved
    first is not among them.

    On PostgreSQL, when every row sets the same columns (the usual case),
    the rows' own values travel as one JSON document joined to the table
    (``UPDATE … FROM jsonb_to_recordset``); otherwise, and on SQLite, each
    column is a ``CASE`` over the ids. The document keeps the statement's
    text and parameters the same whatever the chunk's size: with a ``CASE``
    every row adds parameters, and psycopg parses the statement again on
    every call (docs/performance.md has the cost of each).

    Must run inside the transaction that records the changes' audit events.
    """
    if not from_states or not changes:
        return set()
    connection = connections[router.db_for_write(Delivery)]
    plan = _TransitionPlan(connection)
    assignments = [f"{plan.status_column} = %s", f"{plan.updated_at_column} = %s"]
    params: list[Any] = [to, plan.updated_at_field.get_db_prep_value(timezone.now(), connection)]
    for name, value in sorted((common or {}).items()):
        field, field_column = plan.column(name)
        assignments.append(f"{field_column} = %s")
        params.append(field.get_db_prep_value(value, connection))
    names = sorted({name for row in changes.values() for name in row})
    if connection.vendor == "postgresql" and names and all(len(row) == len(names) for row in changes.values()):
        return _transition_from_document(
            plan,
            assignments=assignments,
            params=params,
            from_states=from_states,
            changes=changes,
            names=names,
            keep_existing=keep_existing,
        )
    # The database's form of each id (a hex string on SQLite, a UUID on
    # PostgreSQL), which is also what RETURNING gives back.
    ids = {plan.pk_field.get_db_prep_value(delivery_id, connection): delivery_id for delivery_id in changes}
    for name in names:
        field, field_column = plan.column(name)
        cases: list[str] = []
        for prepared, delivery_id in ids.items():
            if name in changes[delivery_id]:
                cases.append("WHEN %s THEN %s")
                params += [prepared, field.get_db_prep_value(changes[delivery_id][name], connection)]
        value = f"CASE {plan.pk_column} {' '.join(cases)} ELSE {field_column} END"
        if name in keep_existing:
            value = f"COALESCE({field_column}, {value})"
        assignments.append(f"{field_column} = {value}")
    sql = (
        f"UPDATE {plan.table} SET {', '.join(assignments)} "  # noqa: S608 - names are quoted model metadata; values are parameters
        f"WHERE {plan.pk_column} IN ({', '.join(['%s'] * len(ids))}) "
        f"AND {plan.status_column} IN ({', '.join(['%s'] * len(from_states))}) "
        f"RETURNING {plan.pk_column}"
    )
    params += [*ids, *sorted(from_states)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {ids[row[0]] for row in cursor.fetchall()}


class _TransitionPlan:
    """Quoted names of the delivery table's columns, for one connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.quote = connection.ops.quote_name
        self.meta = Delivery._meta  # noqa: SLF001 - Django's public model metadata
        self.table = self.quote(self.meta.db_table)
        self.pk_field, self.pk_column = self.column("id")
        _, self.status_column = self.column("status")
        self.updated_at_field, self.updated_at_column = self.column("updated_at")

    def column(self, name: str) -> tuple[Field[Any, Any], str]:
        field = self.meta.get_field(name)
        assert isinstance(field, Field)  # noqa: S101 - a concrete column of Delivery
        assert field.column  # noqa: S101
        return field, self.quote(field.column)


def _transition_from_document(
    plan: _TransitionPlan,
    *,
    assignments: list[str],
    params: list[Any],
    from_states: frozenset[str],
    changes: Mapping[Any, Mapping[str, Any]],
    names: list[str],
    keep_existing: Collection[str],
) -> set[Any]:
    """The PostgreSQL form of delivery_transition_many: the rows' own values as one JSON document."""
    connection = plan.connection
    columns = [("id", plan.pk_field, plan.pk_column), *((name, *plan.column(name)) for name in names)]
    definitions = ", ".join(f"{column} {field.db_type(connection)}" for _, field, column in columns)
    for name, _, column in columns[1:]:
        value = f"v.{column}"
        if name in keep_existing:
            value = f"COALESCE({plan.table}.{column}, {value})"
        assignments.append(f"{column} = {value}")
    ids = {str(plan.pk_field.to_python(delivery_id)): delivery_id for delivery_id in changes}
    document = [
        {
            plan.pk_field.column: key,
            **{
                field.column: field.get_db_prep_value(changes[delivery_id][name], connection)
                for name, field, _ in columns[1:]
            },
        }
        # In key order: the join visits (and locks) the rows in the order of
        # the document, so two transactions moving overlapping sets (two
        # receipt batches, a batch and a worker's record) take their row
        # locks in the same order instead of deadlocking.
        for key, delivery_id in sorted(ids.items())
    ]
    sql = (
        f"UPDATE {plan.table} SET {', '.join(assignments)} "  # noqa: S608 - names are quoted model metadata; values are parameters
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({definitions}) "
        f"WHERE {plan.table}.{plan.pk_column} = v.{plan.pk_column} "
        f"AND {plan.table}.{plan.status_column} IN ({', '.join(['%s'] * len(from_states))}) "
        f"RETURNING {plan.table}.{plan.pk_column}"
    )
    params += [json_document(document), *sorted(from_states)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {ids[str(row[0])] for row in cursor.fetchall()}
