"""Reading and checking the audit chains."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from django.utils import timezone

from cakra.audit.hashing import GENESIS_HASH_VALUE, HASHED_FIELDS, event_hash
from cakra.audit.models import AuditChainHead, AuditEvent
from cakra.security.crypto import audit_anchor_key, constant_time_equals


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
        if not constant_time_equals(event_hash({name: getattr(event, name) for name in HASHED_FIELDS}), event.hash):
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


# --- Anchors: the chain heads, kept outside the database -------------------------
# The chain proves that no event before the newest was changed or removed,
# but the newest events can be cut off by someone who also rewrites the head
# rows (they live in the same database). An anchor is a statement of every
# head at one moment, written somewhere the database's users cannot rewrite
# (the operations log, WORM storage, a printed ledger): a later verify with
# the anchor proves that every anchored event is still there, unchanged.
ANCHOR_FORMAT = "cakra-audit-anchor/1"


def _anchor_mac(created_at: str, chains: dict[str, dict[str, object]]) -> str:
    # Under the anchor's own key (not the chain's, not the lookup key): an
    # anchor proves something only if nothing else can produce its MAC.
    canonical = json.dumps({"format": ANCHOR_FORMAT, "created_at": created_at, "chains": chains}, sort_keys=True)
    return hmac.new(audit_anchor_key(), canonical.encode(), hashlib.sha256).hexdigest()


def audit_anchor() -> dict[str, object]:
    """Every chain's head (last sequence number and hash) now, with a keyed MAC
    so that an anchor cannot be forged without the application's key."""
    chains = {
        str(head.chain): {"seq": head.seq, "hash": head.hash}
        for head in AuditChainHead.objects.order_by("chain")
        if head.seq > 0
    }
    created_at = timezone.now().isoformat()
    return {"format": ANCHOR_FORMAT, "created_at": created_at, "chains": chains, "mac": _anchor_mac(created_at, chains)}


class AnchorError(ValueError):
    """The anchor file is not one this application wrote, or is damaged."""


def audit_verify_anchor(anchor: object) -> ChainReport:
    """Check that every event an anchor names is still stored with the hash
    it had. Run after :func:`audit_verify_chain` passed: an intact chain with
    the anchored event in place has lost nothing up to that event."""
    if not isinstance(anchor, dict) or anchor.get("format") != ANCHOR_FORMAT:
        raise AnchorError("not a Cakra audit anchor")
    chains, created_at, mac = anchor.get("chains"), anchor.get("created_at"), anchor.get("mac")
    if not isinstance(chains, dict) or not isinstance(created_at, str) or not isinstance(mac, str):
        raise AnchorError("the anchor is incomplete")
    if not constant_time_equals(mac, _anchor_mac(created_at, chains)):
        raise AnchorError("the anchor's MAC does not match: altered, or written with another key")
    checked = 0
    for chain_text, head in sorted(chains.items(), key=lambda item: int(item[0])):
        chain, seq, expected = int(chain_text), int(head["seq"]), str(head["hash"])
        stored = AuditEvent.objects.filter(chain=chain, seq=seq).values_list("hash", flat=True).first()
        if stored != expected:
            reason = "the anchored event was removed" if stored is None else "the anchored event was changed"
            return ChainReport(
                ok=False, checked=checked, chains=len(chains), broken_chain=chain, broken_seq=seq, reason=reason
            )
        checked += 1
    return ChainReport(ok=True, checked=checked, chains=len(chains))
