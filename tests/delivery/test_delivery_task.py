"""The Celery task wiring: the same path a worker runs, executed in-process."""

from __future__ import annotations

from cakra.audit.models import AuditEvent
from cakra.delivery.dispatch import MAX_ATTEMPTS, RETRY_BACKOFF_MAX_SECONDS, retry_countdown
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.tasks import delivery_send_batch_task


def test_the_task_sends_the_delivery(mail_sink, delivery, celery_eager):
    result = delivery_send_batch_task.apply(args=([str(delivery.id)],))

    assert result.successful()
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert len(mail_sink.messages()) == 1


def test_the_task_retries_until_exhausted_and_the_delivery_is_not_left_waiting(smtp_down, delivery, celery_eager):
    # Inline (eager) execution sends every retry at once (countdowns are skipped).
    result = delivery_send_batch_task.apply(args=([str(delivery.id)],))

    assert result.successful()  # the last try records the failure instead of raising
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    assert delivery.attempt_count == MAX_ATTEMPTS
    outcomes = list(delivery.attempts.order_by("number").values_list("outcome", flat=True))
    assert outcomes == [DeliveryAttempt.Outcome.RETRYABLE] * MAX_ATTEMPTS
    failures = AuditEvent.objects.filter(action="delivery.failed", object_id=str(delivery.id)).order_by("seq")
    assert [event.data["final"] for event in failures] == [False] * (MAX_ATTEMPTS - 1) + [True]


def test_the_task_returns_quietly_for_a_delivery_already_sent(mail_sink, delivery, celery_eager):
    delivery_send_batch_task.apply(args=([str(delivery.id)],))

    result = delivery_send_batch_task.apply(args=([str(delivery.id)],))

    assert result.successful()
    assert len(mail_sink.messages()) == 1


def test_retry_backoff_grows_is_capped_jittered_and_honours_the_provider():
    def drawn(retries, retry_after=None):
        return [retry_countdown(retries=retries, retry_after=retry_after) for _ in range(200)]

    assert all(1 <= c <= 5 for c in drawn(0))
    assert all(1 <= c <= 40 for c in drawn(3))
    assert max(drawn(3)) > 20  # the ceiling grows with the retries
    assert all(1 <= c <= RETRY_BACKOFF_MAX_SECONDS for c in drawn(20))  # capped, however many retries
    assert len(set(drawn(20))) > 150  # spread, not one wave
    assert all(c >= 60 for c in drawn(0, retry_after=60))  # never sooner than the provider asked
    assert all(c == RETRY_BACKOFF_MAX_SECONDS for c in drawn(0, retry_after=86400))  # its wish is capped too
