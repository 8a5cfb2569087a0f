"""Per-API-key quotas: a request rate with a burst, and a cap on requests in flight.

Without them one client's flood (a misconfigured camera back office, a
stolen key) takes every web worker and the database with it, and every
other region waits. Both limits are counted per key id in a store every web
process shares, so they hold across all of them:

- **Rate.** A token bucket per key (GCRA: ``RATE_PER_SECOND``, up to
  ``BURST`` at once). A request with no token is answered 429 with
  ``Retry-After`` before any work is done.
- **In flight.** At most ``MAX_IN_FLIGHT`` requests of one key are being
  served at a time. Each holds a lease, given back when its response is
  complete (:class:`ApiKeyLeaseMiddleware`); a lease also ends by itself
  after ``LEASE_SECONDS``, so a web process killed mid-request cannot leak
  its slot for good.

The store is Redis when the default cache is Redis (production: one Lua
script each), and otherwise two small tables (``ApiKeyLoad``,
``ApiKeyLease``): admission is one conditional ``UPDATE`` of the key's
bucket row, whose lock serialises the key's admissions, and one ``INSERT …
SELECT`` that adds a lease only while fewer than the cap are unexpired, in
one short transaction; the release is one ``DELETE``. (The cache API would
need several statements per step on the database cache.) On both the web
processes' clocks decide (:mod:`cakra.clock`), so hosts sharing a store
keep their clocks in sync (NTP), as they must for sessions and audit times.

Admission runs right after the key is authenticated (``ApiKeyAuth``), so a
quota is only ever spent by its own key: bad tokens have their own limit per
client address. If the store cannot be reached the request is served and a
warning logged: the quotas keep clients fair, they guard no secret, and
intake must not stop with the cache.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest
from django.http import HttpRequest, HttpResponse

from cakra import clock
from cakra.api.models import ApiKey, ApiKeyLease, ApiKeyLoad
from cakra.delivery.channels.store import MICROSECONDS, STORE_ERRORS, RedisStore, shared_store
from cakra.security.ratelimit import RateLimitedError

logger = structlog.get_logger(__name__)

LEASE_ATTRIBUTE = "_cakra_api_key_lease"
IN_FLIGHT_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ApiKeyQuota:
    rate_per_second: float  # 0: no rate limit
    burst: int
    max_in_flight: int  # 0: no cap
    lease_seconds: float


@dataclass(frozen=True)
class HeldLease:
    name: str
    token: str


def api_key_quota(*, key: ApiKey) -> ApiKeyQuota:
    """The limits of ``key``: the settings' defaults, overridden by its prefix's entry."""
    configured: Mapping[str, Any] = settings.CAKRA_API_KEY_LIMITS
    overrides: Mapping[str, Any] = configured.get("KEYS", {}).get(key.prefix, {})

    def value(name: str) -> Any:
        return overrides.get(name, configured[name])

    return ApiKeyQuota(
        rate_per_second=float(value("RATE_PER_SECOND")),
        burst=int(value("BURST")),
        max_in_flight=int(value("MAX_IN_FLIGHT")),
        lease_seconds=float(value("LEASE_SECONDS")),
    )


def _refused(*, key: ApiKey, limit: str, retry_after: float) -> RateLimitedError:
    # Ids only: the prefix names the key, never its secret.
    logger.info("api.key_rate_limited", api_key=key.prefix, limit=limit)
    return RateLimitedError(wait=retry_after, message=f"this API key is over its {limit} quota; retry later")


def _now_us() -> int:
    return int(clock.time() * MICROSECONDS)


def _interval_us(quota: ApiKeyQuota) -> int:
    return max(1, round(MICROSECONDS / quota.rate_per_second))


def _database_rate_take(*, key: ApiKey, quota: ApiKeyQuota, now_us: int) -> float:
    """Take a token of the key's bucket (or, with no rate limit, just lock
    its row); 0.0 when taken, else the seconds to wait. Call in a transaction."""
    rows = ApiKeyLoad.objects.filter(key_id=key.pk)
    if quota.rate_per_second <= 0:
        taken = rows.update(tat_us=F("tat_us"))
        interval = 0
    else:
        interval = _interval_us(quota)
        # GCRA: granted while max(tat, now) + interval <= now + burst * interval,
        # that is tat <= now + (burst - 1) * interval.
        taken = rows.filter(tat_us__lte=now_us + (max(1, quota.burst) - 1) * interval).update(
            tat_us=Greatest(F("tat_us"), Value(now_us)) + interval
        )
    if taken:
        return 0.0
    if not rows.exists():  # the key's first request
        ApiKeyLoad.objects.bulk_create([ApiKeyLoad(key_id=key.pk)], ignore_conflicts=True)
        return _database_rate_take(key=key, quota=quota, now_us=now_us)
    tat_us = rows.values_list("tat_us", flat=True).first() or now_us
    return max(0.0, (tat_us + interval - max(1, quota.burst) * interval - now_us) / MICROSECONDS)


def _database_lease_acquire(*, key: ApiKey, quota: ApiKeyQuota, token: str, now_us: int) -> bool:
    table = connection.ops.quote_name(ApiKeyLease._meta.db_table)  # noqa: SLF001 - Django's public model metadata
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key_id, token, expires_us) SELECT %s, %s, %s "  # noqa: S608 - the table name is ours
            f"WHERE (SELECT COUNT(*) FROM {table} WHERE key_id = %s AND expires_us > %s) < %s",
            [key.pk, token, now_us + int(quota.lease_seconds * MICROSECONDS), key.pk, now_us, quota.max_in_flight],
        )
        return bool(cursor.rowcount == 1)


def _database_admit(*, request: HttpRequest, key: ApiKey, quota: ApiKeyQuota) -> None:
    now_us = _now_us()
    with transaction.atomic():
        wait = _database_rate_take(key=key, quota=quota, now_us=now_us)
        if wait > 0:
            raise _refused(key=key, limit="rate", retry_after=wait)
        if quota.max_in_flight > 0:
            lease = HeldLease(name=str(key.pk), token=secrets.token_hex(8))
            if not _database_lease_acquire(key=key, quota=quota, token=lease.token, now_us=now_us):
                raise _refused(key=key, limit="concurrency", retry_after=IN_FLIGHT_RETRY_AFTER_SECONDS)
            setattr(request, LEASE_ATTRIBUTE, lease)


def _redis_admit(*, request: HttpRequest, key: ApiKey, quota: ApiKeyQuota, store: RedisStore) -> None:
    name = f"api-key:{key.pk}"
    if quota.rate_per_second > 0:
        wait = store.take(identity=name, rate=quota.rate_per_second, burst=max(1, quota.burst))
        if wait > 0:
            raise _refused(key=key, limit="rate", retry_after=wait)
    if quota.max_in_flight > 0:
        lease = HeldLease(name=name, token=secrets.token_hex(8))
        if not store.lease_acquire(
            name=lease.name, token=lease.token, capacity=quota.max_in_flight, seconds=quota.lease_seconds
        ):
            raise _refused(key=key, limit="concurrency", retry_after=IN_FLIGHT_RETRY_AFTER_SECONDS)
        setattr(request, LEASE_ATTRIBUTE, lease)


def api_key_request_admit(*, request: HttpRequest, key: ApiKey) -> None:
    """Spend one request of ``key``'s rate and hold one of its in-flight slots
    until :func:`api_key_request_release`; raise :class:`RateLimitedError`
    (429) when either is exhausted."""
    quota = api_key_quota(key=key)
    if quota.rate_per_second <= 0 and quota.max_in_flight <= 0:
        return
    store = shared_store()
    try:
        if isinstance(store, RedisStore):
            _redis_admit(request=request, key=key, quota=quota, store=store)
        else:
            _database_admit(request=request, key=key, quota=quota)
    except STORE_ERRORS as exc:
        logger.warning("api.key_quota_store_unavailable", api_key=key.prefix, error=type(exc).__name__)


def api_key_request_release(*, request: HttpRequest) -> None:
    """Give back the in-flight slot the request holds, if any."""
    lease: HeldLease | None = getattr(request, LEASE_ATTRIBUTE, None)
    if lease is None:
        return
    delattr(request, LEASE_ATTRIBUTE)
    store = shared_store()
    try:
        if isinstance(store, RedisStore):
            store.lease_release(name=lease.name, token=lease.token)
        else:
            # Expired leases of the key go with it: the table stays as small
            # as the number of requests in flight.
            ApiKeyLease.objects.filter(key_id=int(lease.name)).filter(
                Q(token=lease.token) | Q(expires_us__lte=_now_us())
            ).delete()
    except STORE_ERRORS as exc:
        # The lease runs out by itself; only the slot is missed until then.
        logger.warning("api.key_lease_release_failed", error=type(exc).__name__)


class ApiKeyLeaseMiddleware:
    """Ends the in-flight lease of an API request once its response is ready,
    whatever happened in between (an answer, an error, an exception)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.get_response(request)
        finally:
            api_key_request_release(request=request)
