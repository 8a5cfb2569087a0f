"""Delivery tasks: thin. Parse the id, call the service, map the outcome to retry."""

from __future__ import annotations

from celery import shared_task

from cakra.delivery.sending import RetryLaterError, delivery_send

RETRY_BACKOFF_MAX_SECONDS = 600
MAX_RETRIES = 8


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES, ignore_result=True)
def delivery_send_task(self, delivery_id: str) -> None:  # type: ignore[no-untyped-def]
    try:
        delivery_send(delivery_id=delivery_id)
    except RetryLaterError as exc:
        countdown = min(RETRY_BACKOFF_MAX_SECONDS, 5 * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=countdown) from exc
