"""Writing audit events: always inside the transaction of the change they record.

The trail is split into ``CAKRA_AUDIT_CHAINS`` independent hash chains. A
writer appends to the chain of its process (pid modulo the number of
chains) and locks only that chain's head row until its transaction commits:
at national volume the web and worker processes would otherwise queue on a
single lock for every state change. One transaction only ever locks one
head, so writers cannot deadlock on heads. Each chain is verified on its
own (``cakra audit verify``); together they hold every event.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from cakra.audit.hashing import event_hash
from cakra.audit.models import AuditChainHead, AuditEvent
from cakra.db import rows_insert


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    actor_type: str
    actor_id: str = ""
    action: str
    object_type: str
    object_id: str
    region_code: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def audit_chain_of_this_process() -> int:
    return os.getpid() % settings.CAKRA_AUDIT_CHAINS


def audit_chain_heads_ensure() -> None:
    """Create the head rows of every configured chain (migration does it for the default)."""
    for chain in range(settings.CAKRA_AUDIT_CHAINS):
        try:
            with transaction.atomic():
                AuditChainHead.objects.get_or_create(chain=chain)
        except IntegrityError:  # created concurrently
            continue


def _locked_head(chain: int) -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(chain=chain).first()
    if head is None:  # CAKRA_AUDIT_CHAINS was raised after migrating
        audit_chain_heads_ensure()
        head = AuditChainHead.objects.select_for_update().get(chain=chain)
    return head


class _KnownHeads(threading.local):
    """The head of each chain as this thread last wrote it: (seq, hash) by
    (database alias, chain). Only a guess, checked by the database on every
    use (see audit_events_record): a transaction that rolled back, or another
    process on the same chain, just makes the guess fail."""

    def __init__(self) -> None:
        self.heads: dict[tuple[str, int], tuple[int, str]] = {}


_known_heads = _KnownHeads()


def _linked(chain: int, seq: int, prev_hash: str, entries: list[AuditEntry]) -> list[AuditEvent]:
    """The events of ``entries`` chained after (``seq``, ``prev_hash``)."""
    # Stored and hashed with microsecond precision (what every backend keeps).
    now = timezone.now()
    events = []
    for entry in entries:
        seq += 1
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": now,
            "actor_type": entry.actor_type,
            "actor_id": entry.actor_id,
            "action": entry.action,
            "object_type": entry.object_type,
            "object_id": entry.object_id,
            "region_code": entry.region_code,
            "data": entry.data,
            "prev_hash": prev_hash,
        }
        prev_hash = event_hash(fields)
        # Positional, in the model's column order: about half the cost of
        # keywords, for seven events a notice (docs/performance.md).
        events.append(
            AuditEvent(
                None,
                chain,
                seq,
                now,
                entry.actor_type,
                entry.actor_id,
                entry.action,
                entry.object_type,
                entry.object_id,
                entry.region_code,
                entry.data,
                fields["prev_hash"],
                prev_hash,
            )
        )
    return events


def audit_events_record(entries: list[AuditEntry]) -> list[AuditEvent]:
    """Append events to this process's chain: one head update and one insert.

    Must run inside the caller's transaction, so the events commit or roll
    back with the changes they record; the chain head stays locked until then.

    The head is moved with a compare-and-set (``UPDATE … WHERE seq = s AND
    hash = h``) from the head this thread wrote last: the update locks the
    row as ``SELECT … FOR UPDATE`` would, and changes it only if nobody
    appended since, so the usual append (a process writes its own chain)
    needs no read of the head. When the guess is wrong (another process on
    the chain, a transaction rolled back, a new connection), nothing was
    changed and the head is read under lock as before.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        msg = "audit events must be recorded inside the transaction of the change they record"
        raise RuntimeError(msg)
    if not entries:
        return []
    chain = audit_chain_of_this_process()
    known = _known_heads.heads.get((connection.alias, chain))
    if known is not None:
        events = _linked(chain, *known, entries)
        last = events[-1]
        moved = AuditChainHead.objects.filter(chain=chain, seq=known[0], hash=known[1]).update(
            seq=last.seq, hash=last.hash
        )
        if moved:
            rows_insert(events)
            _known_heads.heads[connection.alias, chain] = (last.seq, last.hash)
            return events
    head = _locked_head(chain)
    events = _linked(chain, head.seq, head.hash, entries)
    last = events[-1]
    rows_insert(events)
    AuditChainHead.objects.filter(pk=head.pk).update(seq=last.seq, hash=last.hash)
    _known_heads.heads[connection.alias, chain] = (last.seq, last.hash)
    return events


def audit_event_record(
    *,
    actor_type: str,
    actor_id: str = "",
    action: str,
    object_type: str,
    object_id: str,
    region_code: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event (see audit_events_record)."""
    entry = AuditEntry(
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        region_code=region_code,
        data=data or {},
    )
    return audit_events_record([entry])[0]
