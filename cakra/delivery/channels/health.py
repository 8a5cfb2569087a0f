"""Provider health: each provider's recent error rate, shared by every worker.

GOV.UK Notify's failover: a provider whose recent sends mostly fail loses
priority, and gets it back once the failures age out. Here "recent" is a
sliding window (``WINDOW_SECONDS``, 60 s by default) of ``BUCKET_SECONDS``
buckets (10 s) per provider, counting attempts and errors; a provider is
**degraded** while its window holds at least ``MIN_ATTEMPTS`` attempts (20)
of which more than ``MAX_ERROR_RATE`` (50 %) failed. The router
(:func:`cakra.delivery.routing.provider_choose`) sorts
degraded providers after healthy ones. Recovery needs no action: a demoted
provider gets little or no traffic, its bad buckets age out of the window,
and within ``WINDOW_SECONDS`` it is first in line again. If it is still
broken, its next ``MIN_ATTEMPTS`` sends demote it again; those are retried
on the other provider, so the probe costs a few retries, never a lost notice.

What counts as an error is what says something about the *provider*:
retryable failures (connection refused, timeouts, 4xx) and throttling. A
permanent refusal of one recipient (a bounced address) is about that
recipient; it counts as an attempt but not as an error. Accepted and
duplicate are successes.

**Cost on the hot path.** Recording an outcome adds to a counter in this
process's memory; reading health uses this process's last snapshot. Every
``SYNC_SECONDS`` (1 s) a process pushes its counts and reads everyone's back
in one store round trip (Redis: one pipeline of ``INCRBY``/``EXPIRE`` plus an
``MGET``; the database cache: one short transaction). So at 300+ sends/s the
store sees about one health round trip per second per worker process, not
per send, and a provider's failures are visible to all workers within about
``SYNC_SECONDS``. Tests set ``SYNC_SECONDS`` to 0 to sync on every call.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings

from cakra import clock
from cakra.delivery.channels.store import KEY_PREFIX, shared_store

logger = structlog.get_logger(__name__)

HEALTH_DEFAULTS: dict[str, float] = {
    "WINDOW_SECONDS": 60,
    "BUCKET_SECONDS": 10,
    "MIN_ATTEMPTS": 20,
    "MAX_ERROR_RATE": 0.5,
    "SYNC_SECONDS": 1.0,
}
# DeliveryAttempt.Outcome values that count against the provider.
ERROR_OUTCOMES = frozenset({"retryable", "throttled"})
ATTEMPTS, ERRORS = "a", "e"


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    attempts: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.attempts if self.attempts else 0.0


def health_policy() -> dict[str, float]:
    configured: Mapping[str, Any] = getattr(settings, "CAKRA_PROVIDER_HEALTH", {})
    return {key: float(configured.get(key, default)) for key, default in HEALTH_DEFAULTS.items()}


def health_policy_problems(configured: object) -> list[str]:
    """What is wrong with ``CAKRA_PROVIDER_HEALTH`` (for the system check)."""
    if not isinstance(configured, Mapping):
        return ["CAKRA_PROVIDER_HEALTH must be a dictionary"]
    problems = [f"unknown key {key!r}" for key in configured if key not in HEALTH_DEFAULTS]
    for key, default in HEALTH_DEFAULTS.items():
        value = configured.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{key} must be a number >= 0")
    if problems:
        return problems
    policy = {key: float(configured.get(key, default)) for key, default in HEALTH_DEFAULTS.items()}
    if policy["BUCKET_SECONDS"] <= 0 or policy["WINDOW_SECONDS"] < policy["BUCKET_SECONDS"]:
        problems.append("BUCKET_SECONDS must be > 0 and WINDOW_SECONDS at least one bucket")
    if policy["MAX_ERROR_RATE"] >= 1:
        problems.append("MAX_ERROR_RATE must be below 1 (a fraction of attempts)")
    return problems


def _key(provider: str, bucket: int, kind: str) -> str:
    return f"{KEY_PREFIX}health:{provider}:{bucket}:{kind}"


def _buckets(now: float, policy: Mapping[str, float]) -> range:
    size = policy["BUCKET_SECONDS"]
    current = int(now // size)
    count = max(1, int(policy["WINDOW_SECONDS"] // size))
    return range(current - count + 1, current + 1)


class _ProcessHealth:
    """This process's unsynced counts and its last view of the shared ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: Counter[tuple[str, int, str]] = Counter()
        self.shared: dict[tuple[str, int, str], int] = {}
        self.known: frozenset[str] = frozenset()
        self.synced_at = float("-inf")  # clock.monotonic() of the last sync

    def reset(self) -> None:
        with self.lock:
            self.pending.clear()
            self.shared = {}
            self.known = frozenset()
            self.synced_at = float("-inf")


_process = _ProcessHealth()


def _sync(names: Iterable[str], policy: Mapping[str, float]) -> None:
    """Push this process's counts and read every worker's for ``names``."""
    with _process.lock:
        pending = _process.pending
        _process.pending = Counter()
        names = frozenset(names) | _process.known
    buckets = _buckets(clock.time(), policy)
    keys = [(name, bucket, kind) for name in sorted(names) for bucket in buckets for kind in (ATTEMPTS, ERRORS)]
    ttl = int(policy["WINDOW_SECONDS"] + policy["BUCKET_SECONDS"]) + 1
    try:
        values = shared_store().sync(
            {_key(*entry): count for entry, count in pending.items()}, ttl=ttl, read=[_key(*key) for key in keys]
        )
    except Exception as exc:  # noqa: BLE001 - health is advisory: a store outage must not stop sending
        logger.warning("provider.health_sync_failed", error=type(exc).__name__)
        with _process.lock:
            _process.pending.update(pending)  # kept for the next sync
            _process.synced_at = clock.monotonic()
        return
    with _process.lock:
        _process.shared = dict(zip(keys, values, strict=True))
        _process.known = names
        _process.synced_at = clock.monotonic()


def _sync_due(names: frozenset[str], policy: Mapping[str, float]) -> bool:
    return clock.monotonic() - _process.synced_at >= policy["SYNC_SECONDS"] or not names <= _process.known


def provider_outcome_record(*, provider: str, outcome: str) -> None:
    """Count one attempt's outcome toward ``provider``'s health."""
    policy = health_policy()
    bucket = int(clock.time() // policy["BUCKET_SECONDS"])
    with _process.lock:
        _process.pending[(provider, bucket, ATTEMPTS)] += 1
        if outcome in ERROR_OUTCOMES:
            _process.pending[(provider, bucket, ERRORS)] += 1
    if _sync_due(frozenset({provider}), policy):
        _sync({provider}, policy)


def provider_health(names: Iterable[str]) -> dict[str, ProviderHealth]:
    """Attempts and errors of each provider over the window, all workers together."""
    policy = health_policy()
    wanted = frozenset(names)
    if _sync_due(wanted, policy):
        _sync(wanted, policy)
    window = set(_buckets(clock.time(), policy))
    totals: Counter[tuple[str, str]] = Counter()
    with _process.lock:
        # The shared view plus what this process has not pushed yet.
        for source in (_process.shared, _process.pending):
            for (name, bucket, kind), count in source.items():
                if name in wanted and bucket in window:
                    totals[(name, kind)] += count
    return {name: ProviderHealth(attempts=totals[(name, ATTEMPTS)], errors=totals[(name, ERRORS)]) for name in wanted}


def provider_is_degraded(health: ProviderHealth, policy: Mapping[str, float] | None = None) -> bool:
    policy = policy or health_policy()
    return health.attempts >= policy["MIN_ATTEMPTS"] and health.error_rate > policy["MAX_ERROR_RATE"]


def providers_degraded(names: Iterable[str]) -> frozenset[str]:
    """The providers among ``names`` that have lost priority for now."""
    policy = health_policy()
    return frozenset(name for name, health in provider_health(names).items() if provider_is_degraded(health, policy))


def provider_health_reset_process() -> None:
    """Forget this process's counts and view (tests; a fresh worker starts so)."""
    _process.reset()
