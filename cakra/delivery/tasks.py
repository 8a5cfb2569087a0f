"""Delivery tasks: thin. Parse the id, call the service, map the outcome to retry.

One queue per channel (the producer routes to ``queue=<channel>``); payloads
are delivery ids only, the database holds everything else.
"""

from __future__ import annotations

import random
import time
from typing import Any

import structlog
from celery import Task, shared_task

from cakra.delivery.sending import MAX_ATTEMPTS, deliveries_send
from cakra.delivery.services import SendBatch, deliveries_publish
from cakra.delivery.sweeper import delivery_sweep_stuck, delivery_sweep_unconfirmed

logger = structlog.get_logger(__name__)

RETRY_BACKOFF_BASE_SECONDS = 5
RETRY_BACKOFF_MIN_SECONDS = 1.0
RETRY_BACKOFF_MAX_SECONDS = 600
MAX_RETRIES = MAX_ATTEMPTS - 1  # the first try and this many retries
DEFER_JITTER_MAX_SECONDS = 5.0


def retry_countdown(*, retries: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter and a cap; never sooner than the provider asked.

    The ceiling doubles with each retry (5 s, 10 s, 20 s, … up to
    RETRY_BACKOFF_MAX_SECONDS) and the countdown is drawn uniformly below it
    ("full jitter"): deliveries that failed together, say in a relay outage,
    come back spread over the interval instead of in one wave that knocks the
    relay over again. The 1 s floor keeps a retry from running at once. The
    provider's retry-after is a floor too, itself capped, so no countdown ever
    exceeds the cap (the sweeper's lease for failed_temporary relies on that).
    """
    ceiling = min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_BASE_SECONDS * 2**retries)
    drawn = (rng or random).uniform(RETRY_BACKOFF_MIN_SECONDS, ceiling)
    return max(drawn, min(retry_after or 0.0, RETRY_BACKOFF_MAX_SECONDS))


def defer_countdown(*, wait: float, rng: random.Random | None = None) -> float:
    """When to come back for a rate-limited send: after ``wait``, plus up to
    half of it (at most DEFER_JITTER_MAX_SECONDS) so that the deliveries
    deferred together do not all return in the same instant."""
    return wait + (rng or random).uniform(0, min(wait / 2, DEFER_JITTER_MAX_SECONDS))


@shared_task(bind=True, acks_late=True, ignore_result=True)
def delivery_send_batch_task(self: Task[[list[str]], None], delivery_ids: list[str]) -> None:
    """Send a batch of deliveries of one channel (ids only)."""
    _send(self, delivery_ids)


@shared_task(bind=True, acks_late=True, ignore_result=True)
def delivery_send_task(self: Task[[str], None], delivery_id: str) -> None:
    """One delivery, the same way as a batch of one (messages published by
    earlier versions, an operator's one-off send)."""
    _send(self, [delivery_id])


def _send(task: Task[Any, None], delivery_ids: list[str]) -> None:
    """Send, then publish what must be sent again later.

    Retries and rate-limit waits become new batch messages with their
    countdown, never ``task.retry``: one batch holds deliveries at different
    attempts, and the count that decides the last try is each delivery's
    own, in the database. With acks_late this message is acknowledged when
    the task returns, after those are published: a worker dying in between
    leaves both, and the claim lets only one of them send each delivery.
    """
    pending = list(delivery_ids)
    while pending:
        report = deliveries_send(delivery_ids=pending)
        wait = defer_countdown(wait=report.deferred_wait) if report.deferred else 0.0
        later: list[SendBatch] = [
            (
                group.channel,
                group.delivery_ids,
                retry_countdown(retries=group.retries - 1, retry_after=group.retry_after),
            )
            for group in report.retries
        ]
        later += [(channel, ids, wait) for channel, ids in report.deferred]
        if not task.request.is_eager:
            # Back to the queue this message came from (the channel's queue,
            # unless operators route differently).
            queue = (task.request.delivery_info or {}).get("routing_key") or ""
            deliveries_publish([(queue or channel, ids, countdown) for channel, ids, countdown in later])
            return
        # apply() or eager mode: there is no broker to hold a message, so send
        # again here at once; only a rate-limit wait is slept.
        time.sleep(wait)
        pending = [delivery_id for _, ids, _ in later for delivery_id in ids]


# --- Sweeper (Celery beat; see cakra.delivery.sweeper) ------------------------
# On the default queue, beside the other scheduled work. Each run is bounded
# and idempotent, and two runs at once do not handle the same row twice, so
# an overlapping or redelivered sweep is harmless; the beat entries let a
# sweep that could not start within its interval expire instead of piling up.


@shared_task(acks_late=True, ignore_result=True)
def delivery_sweep_stuck_task() -> dict[str, object]:
    """Re-enqueue deliveries whose trigger was lost (pending, sending, failed_temporary)."""
    return delivery_sweep_stuck().as_dict()


@shared_task(acks_late=True, ignore_result=True)
def delivery_sweep_unconfirmed_task() -> int:
    """Time out sent deliveries not confirmed by their region's cut-off and fall back."""
    return delivery_sweep_unconfirmed()
