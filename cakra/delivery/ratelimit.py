"""Rate limits per sender identity, shared by every worker.

A provider limits what one *sender identity* may send: 80 messages/s per
WhatsApp number, a contracted rate per SMS sender ID, a relay's per-account
limit. Each ``CAKRA_PROVIDERS`` entry names its identity and that identity's
``RATE_PER_SECOND`` and ``BURST``; every worker process takes a token from the
identity's bucket in the shared store (:mod:`cakra.delivery.channels.store`:
a GCRA token bucket in Redis, a fixed one-second window on the database
cache) before it claims a delivery.

When no token is available the delivery is **never dropped and never
charged an attempt**:

- a short wait (up to ``PATIENCE_SECONDS``, 0.5 s) is slept in the worker and
  the token asked for again. Under sustained load that is the cheapest form
  of back-pressure: the worker simply sends at the identity's rate, with no
  extra broker traffic;
- a longer wait raises :class:`RateLimitedError` before the claim, so the
  delivery keeps its status, and the task publishes itself again after the
  wait (:mod:`cakra.delivery.sending` publishes it through :mod:`cakra.delivery.dispatch`), without counting a retry.

When a provider answers "slow down" (:class:`ThrottledProviderError`), the
whole identity is held for the ``retry_after`` it asked (capped at
``MAX_HOLD_SECONDS``), so every worker backs off, not only the one that was
told; the throttled delivery itself is retried later.

If the store cannot be reached the limit cannot be enforced, so the worker
waits (``STORE_DOWN_WAIT_SECONDS``) instead of sending blind: a provider
that suspends an identity for abuse would cost far more than a delay.

**Cost on the hot path:** one store round trip per batch of sends (Redis: one
``EVALSHA``; database cache: one short transaction): a batch takes its
tokens at once, so a batch can be at most the burst (and, on the fixed
window, the rate) of its identity.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import structlog
from django.conf import settings

from cakra import clock
from cakra.delivery.channels.registry import Provider
from cakra.delivery.channels.store import STORE_ERRORS, shared_store
from cakra.security.ratelimit import RateLimitedError

logger = structlog.get_logger(__name__)

RATE_LIMIT_DEFAULTS: dict[str, float] = {
    "PATIENCE_SECONDS": 0.5,
    "MAX_HOLD_SECONDS": 600.0,
    "DEFAULT_HOLD_SECONDS": 30.0,  # a throttling answer that names no retry-after
    "STORE_DOWN_WAIT_SECONDS": 5.0,
}
MAX_SLEEP_JITTER_SECONDS = 0.02
RATE_LIMITED_MESSAGE = "the sender identity has no token now"
STORE_DOWN_MESSAGE = "the rate-limit store is unavailable"


def rate_limit_policy() -> dict[str, float]:
    configured: Mapping[str, Any] = getattr(settings, "CAKRA_SENDER_RATE_LIMITS", {})
    return {key: float(configured.get(key, default)) for key, default in RATE_LIMIT_DEFAULTS.items()}


def rate_limit_policy_problems(configured: object) -> list[str]:
    """What is wrong with ``CAKRA_SENDER_RATE_LIMITS`` (for the system check)."""
    if not isinstance(configured, Mapping):
        return ["CAKRA_SENDER_RATE_LIMITS must be a dictionary"]
    problems = [f"unknown key {key!r}" for key in configured if key not in RATE_LIMIT_DEFAULTS]
    for key, default in RATE_LIMIT_DEFAULTS.items():
        value = configured.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{key} must be a number >= 0")
    return problems


def sender_batch_limit(provider: Provider) -> int:
    """How many messages one batch of ``provider`` may send on one take of tokens."""
    return shared_store().max_take(rate=provider.rate_per_second, burst=provider.burst)


def sender_token_acquire(provider: Provider, *, patience: float | None = None, count: int = 1) -> None:
    """Take ``count`` tokens of ``provider``'s sender identity (at most
    :func:`sender_batch_limit`), waiting in this process up to ``patience``
    seconds; raise :class:`RateLimitedError` with the wait when they are
    further away than that."""
    policy = rate_limit_policy()
    patience = policy["PATIENCE_SECONDS"] if patience is None else patience
    deadline = clock.monotonic() + patience
    store = shared_store()
    while True:
        try:
            wait = store.take(
                identity=provider.sender_identity, rate=provider.rate_per_second, burst=provider.burst, count=count
            )
        except STORE_ERRORS as exc:
            logger.warning(
                "rate_limit.store_unavailable", sender_identity=provider.sender_identity, error=type(exc).__name__
            )
            raise RateLimitedError(
                wait=policy["STORE_DOWN_WAIT_SECONDS"], subject=provider.sender_identity, message=STORE_DOWN_MESSAGE
            ) from None
        if wait <= 0:
            return
        if clock.monotonic() + wait > deadline:
            raise RateLimitedError(wait=wait, subject=provider.sender_identity, message=RATE_LIMITED_MESSAGE)
        # A little jitter (up to one emission interval, at most 20 ms) so that
        # the processes refused together do not all come back in the same instant.
        jitter = random.uniform(0, min(1 / provider.rate_per_second, MAX_SLEEP_JITTER_SECONDS))  # noqa: S311
        clock.sleep(wait + jitter)


def sender_back_off(provider: Provider, *, retry_after: float | None) -> float:
    """Hold ``provider``'s sender identity for every worker: the provider said
    "slow down". Returns the hold applied, in seconds."""
    policy = rate_limit_policy()
    seconds = min(
        retry_after if retry_after and retry_after > 0 else policy["DEFAULT_HOLD_SECONDS"], policy["MAX_HOLD_SECONDS"]
    )
    try:
        shared_store().hold(
            identity=provider.sender_identity, seconds=seconds, rate=provider.rate_per_second, burst=provider.burst
        )
    except STORE_ERRORS as exc:
        # The delivery is retried after retry_after anyway; only the other
        # workers miss the warning, and they will hear it from the provider.
        logger.warning("rate_limit.hold_failed", sender_identity=provider.sender_identity, error=type(exc).__name__)
    else:
        logger.info("sender_identity.held", sender_identity=provider.sender_identity, seconds=seconds)
    return seconds
