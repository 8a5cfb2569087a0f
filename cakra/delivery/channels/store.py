"""The counters every worker shares: sender-identity rate limits and provider health
(and, on Redis, the per-API-key quotas of :mod:`cakra.api.quota`).

Two implementations behind one small interface, chosen from ``CACHES``:

- :class:`RedisStore` when the default cache is Redis (production, ``REDIS_URL``).
  A token bucket per sender identity runs as one Lua script (GCRA: a single
  timestamp per identity, atomic in Redis). Health counters are
  ``INCRBY`` + ``EXPIRE`` in one pipeline with the ``MGET`` that reads them
  back: one round trip.
- :class:`CacheStore` otherwise (the embedded default: the database cache
  table). Django's cache API has no atomic increment on the database backend
  (``incr`` is a read then a write), so each read-modify-write runs in one
  database transaction holding a lock: on SQLite the settings make every
  transaction ``BEGIN IMMEDIATE``, which takes the database's write lock first;
  on PostgreSQL a transaction-scoped advisory lock on the key. Rate limits
  there are a fixed one-second window rather than a smooth bucket:
  correctness under concurrency matters more than smoothness.

Both are clocked by the caller (:mod:`cakra.clock`): the Redis scripts take
the moment as an argument rather than reading Redis' ``TIME``, so the two
stores keep time the same way and a test moves a bucket's time as it moves
everything else's. Hosts keep their clocks in sync (NTP), as they must for
sessions and audit times. A key's expiry in the store is only its clean-up:
it outlives what the caller's clock needs by ``EXPIRY_SLACK_SECONDS``, so a
clock a little behind the store's own never sees a bucket or a hold vanish
early.

Keys carry sender identities and provider names (both ours, public, never
personal data).
"""

from __future__ import annotations

import abc
import functools
import hashlib
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.db import DatabaseError, connections, router, transaction

from cakra import clock

KEY_PREFIX = "cakra:dispatch:"
REDIS_CACHE_BACKEND = "django.core.cache.backends.redis.RedisCache"
REDIS_TIMEOUT_SECONDS = 2.0
MICROSECONDS = 1_000_000
# What a store that cannot be reached raises, on either backend.
STORE_ERRORS = (redis.RedisError, DatabaseError, OSError)

# How long a key outlives the moment its caller's clock stops needing it.
EXPIRY_SLACK_SECONDS = 5
_SLACK_LUA = f"local slack_ms = {EXPIRY_SLACK_SECONDS * 1000}\n"

# GCRA ("virtual scheduling"): the bucket is the theoretical arrival time
# (TAT) of the next token; a request is allowed while TAT - now stays within
# the burst. Taking n tokens at once (a batch) advances TAT by n intervals.
# Returns 0 when the tokens were taken, else the microseconds to wait.
# KEYS: tat, hold. ARGV: emission interval (µs), burst, count (<= burst), now (µs).
_TAKE_LUA = (
    _SLACK_LUA
    + """
local now = tonumber(ARGV[4])
local held_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if held_until > now then return held_until - now end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * count
local allowed_at = new_tat - burst * interval
if allowed_at > now then return math.ceil(allowed_at - now) end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + slack_ms)
return 0
"""
)

# Hold an identity (the provider said "slow down"): nothing is granted until
# the hold ends, and the bucket restarts empty after it (its TAT is pushed
# a full burst beyond the hold), so sending resumes at the steady rate rather
# than with a burst that would trip the provider again. A shorter hold never
# shortens a longer one. The hold key holds the moment it ends (µs).
# KEYS: tat, hold. ARGV: hold (ms), interval (µs), burst, now (µs).
_HOLD_LUA = (
    _SLACK_LUA
    + """
local ms = tonumber(ARGV[1])
local now = tonumber(ARGV[4])
local until_us = now + ms * 1000
if tonumber(redis.call('GET', KEYS[2]) or '0') < until_us then
  redis.call('SET', KEYS[2], string.format('%d', until_us), 'PX', ms + slack_ms)
end
local tat = until_us + tonumber(ARGV[3]) * tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tat then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + slack_ms)
end
return 0
"""
)


# A bounded set of leases (in-flight requests of one API key, say): expired
# leases are dropped, then a new one is added while fewer than the capacity
# are held. Each lease carries its own expiry, so a process that died
# holding one frees its slot when the lease ends.
# KEYS: the set. ARGV: capacity, lease (ms), token, now (ms). Returns 1 when granted.
_LEASE_ACQUIRE_LUA = (
    _SLACK_LUA
    + """
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + slack_ms)
return 1
"""
)


def _now_us() -> int:
    return int(clock.time() * MICROSECONDS)


def _lease_key(name: str) -> str:
    return f"{KEY_PREFIX}lease:{{{name}}}"


def _rate_keys(identity: str) -> tuple[str, str]:
    # The braces are a Redis Cluster hash tag: both keys of one identity live
    # in one slot, as a multi-key script requires.
    return f"{KEY_PREFIX}{{{identity}}}:tat", f"{KEY_PREFIX}{{{identity}}}:hold"


class SharedStore(abc.ABC):
    """What rate limits and health need from the shared store."""

    @abc.abstractmethod
    def take(self, *, identity: str, rate: float, burst: int, count: int = 1) -> float:
        """Take ``count`` tokens of ``identity``'s bucket at once: 0.0 when
        granted, else the seconds until they may be (nothing is taken then).
        ``count`` must not exceed :meth:`max_take`, or it is never granted."""

    @staticmethod
    def max_take(*, rate: float, burst: int) -> int:
        """The most tokens one take can ever get: the burst (token bucket),
        and the window's whole allowance (fixed window)."""
        return max(1, min(burst, int(rate)))

    @abc.abstractmethod
    def hold(self, *, identity: str, seconds: float, rate: float, burst: int) -> None:
        """Grant ``identity`` nothing for ``seconds`` (unless already held longer)."""

    @abc.abstractmethod
    def sync(self, increments: Mapping[str, int], *, ttl: int, read: Sequence[str]) -> list[int]:
        """Add ``increments`` to their counters (each kept ``ttl`` seconds after
        its last change) and return the current values of ``read`` (0 for none)."""

    @abc.abstractmethod
    def forget_identity(self, identity: str) -> None:
        """Drop an identity's bucket and hold (operations and tests)."""


class RedisStore(SharedStore):
    def __init__(self, url: str) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        # register_script sends EVALSHA and falls back to EVAL once per
        # connection when the server does not know the script yet.
        self._take = self.client.register_script(_TAKE_LUA)
        self._hold = self.client.register_script(_HOLD_LUA)
        self._lease_acquire = self.client.register_script(_LEASE_ACQUIRE_LUA)

    def take(self, *, identity: str, rate: float, burst: int, count: int = 1) -> float:
        interval_us = max(1, round(MICROSECONDS / rate))
        wait_us = int(self._take(keys=list(_rate_keys(identity)), args=[interval_us, burst, count, _now_us()]))
        return wait_us / MICROSECONDS

    def hold(self, *, identity: str, seconds: float, rate: float, burst: int) -> None:
        interval_us = max(1, round(MICROSECONDS / rate))
        ms = max(1, math.ceil(seconds * 1000))
        self._hold(keys=list(_rate_keys(identity)), args=[ms, interval_us, burst, _now_us()])

    def sync(self, increments: Mapping[str, int], *, ttl: int, read: Sequence[str]) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for key, delta in increments.items():
            pipe.incrby(key, delta)
            pipe.expire(key, ttl)
        if read:
            pipe.mget(list(read))
        results = pipe.execute()
        if not read:
            return []
        return [int(value) if value is not None else 0 for value in results[-1]]

    def forget_identity(self, identity: str) -> None:
        self.client.delete(*_rate_keys(identity))

    def lease_acquire(self, *, name: str, token: str, capacity: int, seconds: float) -> bool:
        """Hold one of ``capacity`` leases of ``name`` for at most ``seconds``,
        identified by ``token``; False (nothing held) when all are taken.
        (Redis only: on the database, :mod:`cakra.api.quota` keeps leases in
        a table of its own, at fewer statements than the cache API needs.)"""
        ms = max(1, math.ceil(seconds * 1000))
        now_ms = int(clock.time() * 1000)
        return bool(self._lease_acquire(keys=[_lease_key(name)], args=[capacity, ms, token, now_ms]))

    def lease_release(self, *, name: str, token: str) -> None:
        """Give back the lease ``token`` of ``name`` (nothing if it expired)."""
        self.client.zrem(_lease_key(name), token)


def _advisory_lock_id(name: str) -> int:
    """A signed 64-bit id for pg_advisory_xact_lock, stable across processes."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class CacheStore(SharedStore):
    """Over any Django cache; exact under concurrency on the database cache
    (SQLite or PostgreSQL), and within one process on the local-memory cache."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        # One read-modify-write at a time per process; the database lock below
        # extends that to every process sharing the database.
        self._thread_lock = threading.Lock()

    @property
    def cache(self) -> Any:
        return caches[self.alias]

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        cache = self.cache
        with self._thread_lock:
            if not isinstance(cache, DatabaseCache):
                yield
                return
            using = router.db_for_write(cache.cache_model_class)
            with transaction.atomic(using=using):
                connection = connections[using]
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_advisory_lock_id(KEY_PREFIX + name)])
                # SQLite: the transaction began IMMEDIATE (settings), holding
                # the database's write lock until it ends.
                yield

    def take(self, *, identity: str, rate: float, burst: int, count: int = 1) -> float:
        # Whole seconds, or one token per window when the rate is below 1/s.
        window_seconds = 1.0 if rate >= 1 else 1.0 / rate
        limit = max(1, int(rate * window_seconds))
        _, hold_key = _rate_keys(identity)
        with self._locked(f"rate:{identity}"):
            # The clock is read under the lock: a take that waited for it
            # counts in the window it is granted in, not the one it asked in.
            now = clock.time()
            window = int(now // window_seconds)
            count_key = f"{KEY_PREFIX}{identity}:window:{window}"
            values = self.cache.get_many([count_key, hold_key])
            held_until = values.get(hold_key)
            if held_until is not None and held_until > now:
                return float(held_until - now)
            taken = int(values.get(count_key, 0))
            if taken + count > limit:
                return (window + 1) * window_seconds - now
            self.cache.set(count_key, taken + count, timeout=math.ceil(window_seconds) + EXPIRY_SLACK_SECONDS)
        return 0.0

    def hold(self, *, identity: str, seconds: float, rate: float, burst: int) -> None:
        _, hold_key = _rate_keys(identity)
        until = clock.time() + seconds
        with self._locked(f"rate:{identity}"):
            current = self.cache.get(hold_key)
            if current is None or current < until:
                self.cache.set(hold_key, until, timeout=math.ceil(seconds) + EXPIRY_SLACK_SECONDS)

    def sync(self, increments: Mapping[str, int], *, ttl: int, read: Sequence[str]) -> list[int]:
        if not increments:
            values = self.cache.get_many(list(read)) if read else {}
            return [int(values.get(key, 0)) for key in read]
        with self._locked("health"):
            values = self.cache.get_many([*increments, *read])
            updated = {key: int(values.get(key, 0)) + delta for key, delta in increments.items()}
            self.cache.set_many(updated, timeout=ttl)
        values |= updated
        return [int(values.get(key, 0)) for key in read]

    def forget_identity(self, identity: str) -> None:
        _, hold_key = _rate_keys(identity)
        window = int(clock.time())
        self.cache.delete_many(
            [hold_key, *(f"{KEY_PREFIX}{identity}:window:{w}" for w in range(window - 2, window + 2))]
        )


@functools.cache
def _redis_store(url: str) -> RedisStore:
    return RedisStore(url)


@functools.cache
def _cache_store(alias: str) -> CacheStore:
    return CacheStore(alias)


def shared_store() -> SharedStore:
    """The store for this configuration: Redis when the default cache is
    Redis, the default cache itself otherwise. One instance per process and
    configuration (the Redis client holds a connection pool)."""
    config: Mapping[str, Any] = settings.CACHES["default"]
    if config["BACKEND"] == REDIS_CACHE_BACKEND:
        location = config["LOCATION"]
        return _redis_store(location if isinstance(location, str) else location[0])
    return _cache_store("default")
