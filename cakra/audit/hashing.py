"""The canonical form an audit event is hashed in."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

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
    """SHA-256 over the canonical JSON of ``fields`` (exactly HASHED_FIELDS)."""
    canonical: dict[str, Any] = {name: fields[name] for name in HASHED_FIELDS}
    created_at: datetime = canonical["created_at"]
    canonical["created_at"] = created_at.isoformat(timespec="microseconds")
    text = _CANONICAL.encode(canonical)
    return hashlib.sha256(text.encode()).hexdigest()
