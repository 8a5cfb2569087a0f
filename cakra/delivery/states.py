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
) -> set[Any]:
    """Move many deliveries to ``to``, in one statement, if at this instant
    their status is one of ``from_states``.

    ``changes`` maps each delivery id to the columns it sets besides the
    status (each row its own values, e.g. its own ``delivered_at``); a column
    in ``keep_existing`` is set only where it is still NULL. Returns the ids
    (as given) of the deliveries that moved: the UPDATE's ``RETURNING``
    decides, so a delivery another transaction moved first is not among them.

    Must run inside the transaction that records the changes' audit events.
    """
    if not from_states or not changes:
        return set()
    connection = connections[router.db_for_write(Delivery)]
    quote = connection.ops.quote_name
    meta = Delivery._meta  # noqa: SLF001 - Django's public model metadata

    def column(name: str) -> tuple[Field[Any, Any], str]:
        field = meta.get_field(name)
        assert isinstance(field, Field)  # noqa: S101 - a concrete column of Delivery
        assert field.column  # noqa: S101
        return field, quote(field.column)

    pk_field, pk_column = column("id")
    _, status_column = column("status")
    updated_at_field, updated_at_column = column("updated_at")
    # The database's form of each id (a hex string on SQLite, a UUID on
    # PostgreSQL), which is also what RETURNING gives back.
    ids = {pk_field.get_db_prep_value(delivery_id, connection): delivery_id for delivery_id in changes}
    assignments = [f"{status_column} = %s", f"{updated_at_column} = %s"]
    params: list[Any] = [to, updated_at_field.get_db_prep_value(timezone.now(), connection)]
    for name in sorted({name for row in changes.values() for name in row}):
        field, field_column = column(name)
        cases: list[str] = []
        for prepared, delivery_id in ids.items():
            if name in changes[delivery_id]:
                cases.append("WHEN %s THEN %s")
                params += [prepared, field.get_db_prep_value(changes[delivery_id][name], connection)]
        value = f"CASE {pk_column} {' '.join(cases)} ELSE {field_column} END"
        if name in keep_existing:
            value = f"COALESCE({field_column}, {value})"
        assignments.append(f"{field_column} = {value}")
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608 - names are quoted model metadata; values are parameters
        f"WHERE {pk_column} IN ({', '.join(['%s'] * len(ids))}) "
        f"AND {status_column} IN ({', '.join(['%s'] * len(from_states))}) "
        f"RETURNING {pk_column}"
    )
    params += [*ids, *sorted(from_states)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {ids[row[0]] for row in cursor.fetchall()}
