"""Delivery tasks: thin. Parse the id, call the service, map the outcome to retry.

One queue per channel (the producer routes to ``queue=<channel>``); payloads
are delivery ids only, the database holds everything else.
"""

from __future__ import annotations

import random
import time

import structlog
from celery import Task, shared_task

from cakra.delivery.ratelimit import RateLimitedError
from cakra.delivery.sending import RetryLaterError, delivery_send
from cakra.delivery.sweeper import delivery_sweep_stuck, delivery_sweep_unconfirmed

logger = structlog.get_logger(__name__)

RETRY_BACKOFF_BASE_SECONDS = 5
RETRY_BACKOFF_MIN_SECONDS = 1.0
RETRY_BACKOFF_MAX_SECONDS = 600
MAX_RETRIES = 8
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


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES, ignore_result=True)
def delivery_send_task(self: Task[[str], None], delivery_id: str) -> None:
    # On the last try a retryable failure is recorded as permanent by the
    # service itself, so the delivery never waits for a retry that won't come.
    final_attempt = self.request.retries >= MAX_RETRIES
    while True:
        try:
            delivery_send(delivery_id=delivery_id, final_attempt=final_attempt)
        except RateLimitedError as exc:
            countdown = defer_countdown(wait=exc.wait)
            if self.request.is_eager:
                # apply() or eager mode: there is no broker to hold a message,
                # so wait here and send again.
                time.sleep(countdown)
                continue
            _delivery_send_defer(self, delivery_id=delivery_id, countdown=countdown)
        except RetryLaterError as exc:
            countdown = retry_countdown(retries=self.request.retries, retry_after=exc.retry_after)
            raise self.retry(exc=exc, countdown=countdown) from exc
        return


def _delivery_send_defer(task: Task[[str], None], *, delivery_id: str, countdown: float) -> None:
    """Publish this task again after ``countdown``, with the same retry count:
    waiting for a rate limit is not a failed try, so it must not bring the
    delivery closer to its last attempt (``self.retry`` would count it).

    Same queue and options as this message (what ``Task.retry`` does, minus
    the count). With acks_late this message is acknowledged when the task
    returns, after the new one is published: a worker dying in between leaves
    both, and the claim lets only one of them send.
    """
    signature = task.signature_from_request(task.request, countdown=countdown, retries=task.request.retries)
    signature.apply_async()
    logger.info("delivery_send_deferred", delivery_id=delivery_id, countdown=round(countdown, 3))


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
