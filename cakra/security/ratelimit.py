"""Fixed-window rate limits over the shared cache (Redis or the database).

Used wherever an answer could be guessed: portal lookups, officer logins,
API authentication failures. The counter key is hashed so that client
addresses and notice numbers never sit in the cache in clear.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from cakra.security.proxies import client_address

__all__ = ["Limit", "client_address", "hit", "is_limited"]


@dataclass(frozen=True)
class Limit:
    scope: str
    count: int
    seconds: int


def _key(limit: Limit, subject: str, window: int) -> str:
    digest = hashlib.sha256(f"{settings.SECRET_KEY}|{subject}".encode()).hexdigest()[:32]
    return f"rl:{limit.scope}:{window}:{digest}"


def hit(limit: Limit, subject: str) -> bool:
    """Count one attempt; return True while the subject is within the limit."""
    window = int(time.time()) // limit.seconds
    key = _key(limit, subject, window)
    if cache.add(key, 1, timeout=limit.seconds + 5):
        return True
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=limit.seconds + 5)
        return True
    return count <= limit.count


def is_limited(limit: Limit, subject: str) -> bool:
    """Peek without counting."""
    window = int(time.time()) // limit.seconds
    value = cache.get(_key(limit, subject, window))
    return value is not None and int(value) > limit.count
