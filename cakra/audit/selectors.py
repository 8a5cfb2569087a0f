"""Reading and checking the audit chain."""

from __future__ import annotations

from dataclasses import dataclass

from cakra.audit.hashing import HASHED_FIELDS, event_hash
from cakra.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from cakra.audit.services import CHAIN


@dataclass(frozen=True, kw_only=True)
class ChainReport:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""


def audit_verify_chain(*, batch_size: int = 2000) -> ChainReport:
    """Walk the chain in order; report the first event whose link does not hold."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=batch_size)
    for event in events:
        if event.seq != expected_seq:
            return ChainReport(
                ok=False, checked=checked, broken_seq=expected_seq, reason=f"event #{expected_seq} is missing"
            )
        if event.prev_hash != expected_prev:
            return ChainReport(
                ok=False, checked=checked, broken_seq=event.seq, reason="does not link to its predecessor"
            )
        recomputed = event_hash({name: getattr(event, name) for name in HASHED_FIELDS})
        if recomputed != event.hash:
            return ChainReport(
                ok=False, checked=checked, broken_seq=event.seq, reason="content does not match its hash"
            )
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
    head = AuditChainHead.objects.filter(name=CHAIN).first()
    if head is not None and (head.seq != checked or head.hash != expected_prev):
        return ChainReport(
            ok=False, checked=checked, broken_seq=checked + 1, reason="events after the last intact one were removed"
        )
    return ChainReport(ok=True, checked=checked)
