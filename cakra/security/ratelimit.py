"""Fixed-window limits on attempts: count first, atomically, then decide.

Used wherever an answer could be guessed or a failure repeated: portal
lookups, officer sign-in, API-key and webhook-signature failures.

**Increment-then-decide.** :func:`hit` counts the attempt and returns the
verdict of that one atomic increment, so N parallel attempts get N distinct
counts and at most ``limit.count`` of them are allowed, however they
interleave. A check followed later by a count (peek-then-act) would let a
burst of parallel guesses all pass the check before any was counted. Where
only failures should count but the guess must not be evaluated beyond the
limit (the per-number limit of portal lookups), :func:`reserve` counts
the attempt up front and :func:`refund` gives it back once it turned out to
be a success.

**One atomic store, chosen by settings.**

- Redis when ``REDIS_URL`` is set: one Lua script per count (``INCR``, and
  ``EXPIRE`` on the window's first count), atomic in Redis.
- Otherwise the ``RateLimitCounter`` table, counted by one statement,
  ``INSERT … ON CONFLICT (key) DO UPDATE SET count = count + 1 RETURNING
  count``: atomic on PostgreSQL (the conflicting row is locked) and SQLite
  (3.35+; one writer at a time). Django's database cache could not be used:
  its ``incr`` is a read followed by a write. Windows that ended are deleted
  by :func:`counters_purge` (a scheduled task); a stale row is never read,
  because the key names its window.

The counters must be touched outside any open transaction: a rolled-back
request would otherwise take its count back, and on PostgreSQL the row lock
would be held until the request's transaction ends.

Keys carry a keyed hash (HMAC under a key derived from ``SECRET_KEY`` for
this purpose alone) of the subject, so client addresses and notice numbers
never sit in the store in clear.
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connections, router
from django.db.models import F
from django.utils.crypto import salted_hmac

from cakra import clock
from cakra.security.models import RateLimitCounter
from cakra.security.proxies import client_address

__all__ = ["Limit", "Reservation", "client_address", "counters_purge", "hit", "refund", "reserve"]

REDIS_KEY_PREFIX = "cakra:rl:"
REDIS_TIMEOUT_SECONDS = 2.0
# Redis keeps a counter this long past its window, so a clock a little
# behind Redis' own cannot see a window restart early.
EXPIRY_SLACK_SECONDS = 5

# KEYS: counter. ARGV: seconds to live. Returns the count after this attempt.
_INCREMENT_LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
# Gives one attempt back, but never to a window that has already ended (that
# would create a counter without expiry, or credit the next window).
_DECREMENT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('GET', KEYS[1])) > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


AUTH_FAILURE_MESSAGE = "too many failed authentications; wait and retry"


class RateLimitedError(Exception):
    """Refused by a limit for ``wait`` seconds: come back after it.

    The one error every limiter raises (API keys, failed authentications, a
    sender identity's tokens); the API answers it as 429 with Retry-After,
    the sending service as a batch handed back for later. ``message`` is
    safe to show the client; ``subject`` names what was limited (a sender
    identity), never a secret.
    """

    def __init__(self, *, wait: float, message: str = "too many requests; wait and retry", subject: str = "") -> None:
        super().__init__(message)
        self.wait = wait
        self.message = message
        self.subject = subject

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least one (HTTP's Retry-After has no fractions)."""
        return str(max(1, math.ceil(self.wait)))


@dataclass(frozen=True)
class Limit:
    scope: str
    count: int
    seconds: int


@dataclass(frozen=True)
class Reservation:
    """One counted attempt: whether it is within the limit, and the window
    counter it was counted in (what :func:`refund` gives it back to)."""

    within_limit: bool
    key: str


class CounterStore(abc.ABC):
    @abc.abstractmethod
    def increment(self, *, key: str, expires_at: int, now: int) -> int:
        """Add one to ``key`` (created with count 1) and return the new count."""

    @abc.abstractmethod
    def decrement(self, *, key: str) -> None:
        """Take one from ``key`` if it still exists and is above zero."""

    @abc.abstractmethod
    def purge(self, *, now: int) -> int:
        """Delete counters whose window ended before ``now``; how many."""


class RedisCounterStore(CounterStore):
    def __init__(self, url: str) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._increment = self.client.register_script(_INCREMENT_LUA)
        self._decrement = self.client.register_script(_DECREMENT_LUA)

    def increment(self, *, key: str, expires_at: int, now: int) -> int:
        ttl = max(1, expires_at - now) + EXPIRY_SLACK_SECONDS
        return int(self._increment(keys=[REDIS_KEY_PREFIX + key], args=[ttl]))

    def decrement(self, *, key: str) -> None:
        self._decrement(keys=[REDIS_KEY_PREFIX + key])

    def purge(self, *, now: int) -> int:
        return 0  # Redis expires each counter itself


class DatabaseCounterStore(CounterStore):
    def increment(self, *, key: str, expires_at: int, now: int) -> int:
        using = router.db_for_write(RateLimitCounter)
        quote = connections[using].ops.quote_name
        table, key_column, count_column, expires_column = (
            quote(name)
            for name in (RateLimitCounter._meta.db_table, "key", "count", "expires_at")  # noqa: SLF001 - Django public API
        )
        # One statement, so no other attempt can come between the read and
        # the write of the count (the ORM's update_or_create is two). Only
        # quoted names of our own are formatted in; values are parameters.
        sql = (
            f"INSERT INTO {table} ({key_column}, {count_column}, {expires_column}) VALUES (%s, 1, %s) "  # noqa: S608
            f"ON CONFLICT ({key_column}) DO UPDATE SET {count_column} = {table}.{count_column} + 1 "
            f"RETURNING {count_column}"
        )
        with connections[using].cursor() as cursor:
            cursor.execute(sql, [key, expires_at])
            row = cursor.fetchone()
        return int(row[0])

    def decrement(self, *, key: str) -> None:
        RateLimitCounter.objects.filter(key=key, count__gt=0).update(count=F("count") - 1)

    def purge(self, *, now: int) -> int:
        deleted, _ = RateLimitCounter.objects.filter(expires_at__lt=now).delete()
        return deleted


@functools.cache
def _redis_store(url: str) -> RedisCounterStore:
    return RedisCounterStore(url)


_DATABASE_STORE = DatabaseCounterStore()


def counter_store() -> CounterStore:
    """Redis when REDIS_URL is set (shared by every web process), else the database."""
    url = str(settings.REDIS_URL or "")
    return _redis_store(url) if url else _DATABASE_STORE


def _now() -> int:
    return int(clock.time())


# Django's labelled derivation from SECRET_KEY: this HMAC key serves only
# limiter subjects, not sessions, signing or any other use of SECRET_KEY.
SUBJECT_KEY_SALT = "cakra.security.ratelimit.subject"


def _key(limit: Limit, subject: str, window: int) -> str:
    digest = salted_hmac(SUBJECT_KEY_SALT, f"{limit.scope}|{subject}", algorithm="sha256")
    return f"{limit.scope}:{window}:{digest.hexdigest()[:32]}"


def reserve(limit: Limit, subject: str) -> Reservation:
    """Count one attempt now, atomically; the reservation says whether it is
    within the limit and can be refunded if the attempt was a success."""
    now = _now()
    window = now // limit.seconds
    key = _key(limit, subject, window)
    count = counter_store().increment(key=key, expires_at=(window + 1) * limit.seconds, now=now)
    return Reservation(within_limit=count <= limit.count, key=key)


def refund(reservation: Reservation) -> None:
    """Give back an attempt that turned out not to be one the limit is for
    (a success). Only to its own window: a window that ended is left alone."""
    counter_store().decrement(key=reservation.key)


def hit(limit: Limit, subject: str) -> bool:
    """Count one attempt now, atomically, and return True while the subject
    is within the limit (this attempt included)."""
    return reserve(limit, subject).within_limit


def counters_purge() -> int:
    """Delete the counters of windows that have ended (database store only)."""
    return counter_store().purge(now=_now())
