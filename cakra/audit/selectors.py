"""Reading and checking the audit chains."""

from __future__ import annotations

from dataclasses import dataclass

from cakra.audit.hashing import GENESIS_HASH_VALUE, HASHED_FIELDS, event_hash
from cakra.audit.models import AuditChainHead, AuditEvent


@dataclass(frozen=True, kw_only=True)
class ChainReport:
    ok: bool
    checked: int
    chains: int = 0
    broken_chain: int | None = None
    broken_seq: int | None = None
    reason: str = ""


def audit_verify_chain(*, batch_size: int = 2000) -> ChainReport:
    """Walk every chain in order; report the first event whose link does not hold."""
    heads = {head.chain: head for head in AuditChainHead.objects.all()}
    checked = 0
    chain: int | None = None
    expected_prev, expected_seq = GENESIS_HASH_VALUE, 1
    ends: dict[int, tuple[int, str]] = {}

    def broken(seq: int, reason: str) -> ChainReport:
        return ChainReport(
            ok=False, checked=checked, chains=len(heads), broken_chain=chain, broken_seq=seq, reason=reason
        )

    for event in AuditEvent.objects.order_by("chain", "seq").iterator(chunk_size=batch_size):
        if event.chain != chain:
            chain, expected_prev, expected_seq = event.chain, GENESIS_HASH_VALUE, 1
        if event.seq != expected_seq:
            return broken(expected_seq, f"event #{expected_seq} is missing")
        if event.prev_hash != expected_prev:
            return broken(event.seq, "does not link to its predecessor")
        if event_hash({name: getattr(event, name) for name in HASHED_FIELDS}) != event.hash:
            return broken(event.seq, "content does not match its hash")
        expected_prev, expected_seq = event.hash, expected_seq + 1
        ends[event.chain] = (event.seq, event.hash)
        checked += 1
    for head_chain, head in heads.items():
        last_seq, last_hash = ends.get(head_chain, (0, GENESIS_HASH_VALUE))
        if (head.seq, head.hash) != (last_seq, last_hash):
            chain = head_chain
            return broken(last_seq + 1, "events after the last intact one were removed")
    return ChainReport(ok=True, checked=checked, chains=len(heads))
