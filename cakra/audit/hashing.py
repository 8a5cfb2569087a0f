"""The canonical form an audit event is hashed in, and the keyed hash itself.

The link is HMAC-SHA256 under the audit chain key (derived from
``CAKRA_AUDIT_KEY``, cakra.security.crypto.audit_chain_key), not a plain
hash: someone who can write to the database can append, change or cut
events, but cannot compute links that ``cakra audit verify`` accepts
without the key, which lives outside the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from cakra.security.crypto import audit_chain_key

GENESIS_HASH_VALUE = "0" * 64

# Every column of an event that its hash covers (all but the hash itself).
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor_type",
    "actor_id",
    "action",
    "object_type",
    "object_id",
    "region_code",
    "data",
    "prev_hash",
)

# One encoder for every event: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def event_hash(fields: dict[str, Any]) -> str:
    """HMAC-SHA256 (audit chain key) over the canonical JSON of ``fields``
    (exactly HASHED_FIELDS, the predecessor's hash among them)."""
    canonical: dict[str, Any] = {name: fields[name] for name in HASHED_FIELDS}
    created_at: datetime = canonical["created_at"]
    canonical["created_at"] = created_at.isoformat(timespec="microseconds")
    text = _CANONICAL.encode(canonical)
    return hmac.new(audit_chain_key(), text.encode(), hashlib.sha256).hexdigest()
