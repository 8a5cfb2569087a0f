"""Delivery tasks: thin. Parse the id, call the service, map the outcome to retry.

One queue per channel (the producer routes to ``queue=<channel>``); payloads
are delivery ids only, the database holds everything else.
"""

from __future__ import annotations

from celery import Task, shared_task

from cakra.delivery.sending import RetryLaterError, delivery_send

RETRY_BACKOFF_MAX_SECONDS = 600
MAX_RETRIES = 8


def retry_countdown(*, retries: int, retry_after: float | None) -> float:
    """Exponential backoff (5 s, 10 s, … capped), never sooner than the provider asked."""
    return max(float(min(RETRY_BACKOFF_MAX_SECONDS, 5 * 2**retries)), retry_after or 0.0)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES, ignore_result=True)
def delivery_send_task(self: Task[[str], None], delivery_id: str) -> None:
    # On the last try a retryable failure is recorded as permanent by the
    # service itself, so the delivery never waits for a retry that won't come.
    final_attempt = self.request.retries >= MAX_RETRIES
    try:
        delivery_send(delivery_id=delivery_id, final_attempt=final_attempt)
    except RetryLaterError as exc:
        countdown = retry_countdown(retries=self.request.retries, retry_after=exc.retry_after)
        raise self.retry(exc=exc, countdown=countdown) from exc
