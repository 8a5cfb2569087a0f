"""Writing audit events: always inside the transaction of the change they record."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from cakra.audit.hashing import event_hash
from cakra.audit.models import AuditChainHead, AuditEvent

CHAIN = "main"


def audit_record(
    *,
    actor_type: str,
    actor_id: str = "",
    action: str,
    object_type: str,
    object_id: str,
    region_code: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain.

    Must run inside the caller's transaction, so the event commits or rolls
    back with the change it records. The chain head row is locked for the
    rest of that transaction: concurrent writers link up one after another.
    """
    if not transaction.get_connection().in_atomic_block:
        msg = "audit_record must run inside the transaction of the change it records"
        raise RuntimeError(msg)
    # The head row is created by migration; locking it serialises writers.
    head = AuditChainHead.objects.select_for_update().get(name=CHAIN)
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        # Stored and hashed with microsecond precision (what every backend keeps).
        "created_at": timezone.now(),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "region_code": region_code,
        "data": data or {},
        "prev_hash": head.hash,
    }
    digest = event_hash(fields)
    event = AuditEvent.objects.create(**fields, hash=digest)
    AuditChainHead.objects.filter(pk=head.pk).update(seq=event.seq, hash=digest)
    return event
