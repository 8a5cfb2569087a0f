"""Sending in batches: one claim, one provider session and one record per
chunk, and a provider that says "slow down" or cannot be reached stops the
batch without charging the deliveries it never tried."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from cakra.audit.models import AuditEvent
from cakra.delivery.dispatch import MAX_ATTEMPTS
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.sending import deliveries_claim, deliveries_send
from cakra.delivery.tasks import delivery_send_batch_task
from cakra.enforcement.models import Notice
from cakra.simulators.smtp import MailSink
from tests.factories import VehicleFactory, make_notice, make_owner


@pytest.fixture
def email_deliveries(region, pre_validated_key):
    """``email_deliveries(["a@example.co.id", ...])``: one issued notice per
    address, each with its pending email delivery, in that order."""
    key, _token = pre_validated_key
    made = itertools.count()

    def make(addresses):
        deliveries = []
        for address in addresses:
            position = next(made)
            vehicle = VehicleFactory.create(plate=f"B {7000 + position} BAT", owner=make_owner(email=address))
            notice = make_notice(vehicle=vehicle, api_key=key, capture_id=f"CAP-BATCH-{position}")
            deliveries.append(notice.deliveries.get(channel="email"))
        return deliveries

    return make


def _ids(deliveries):
    return [str(delivery.id) for delivery in deliveries]


def _statuses(deliveries):
    return [Delivery.objects.get(pk=delivery.pk).status for delivery in deliveries]


def _send_statements(deliveries):
    with CaptureQueriesContext(connection) as captured:
        report = deliveries_send(delivery_ids=_ids(deliveries))
    assert report.outcomes == {"sent": len(deliveries), "released": 0}
    # Each statement by its start, the accepted notes by what they write (on
    # PostgreSQL a note starts with its SET LOCAL).
    return [
        "accepted note" if "accepted_reference" in q["sql"] and "UPDATE" in q["sql"][:80] else q["sql"][:60]
        for q in captured.captured_queries
        if "cakra_cache" not in q["sql"] and "SAVEPOINT" not in q["sql"] and "pg_advisory" not in q["sql"]
    ]


def test_a_batch_is_sent_and_recorded_with_a_constant_number_of_statements(mail_sink, email_deliveries):
    two = _send_statements(email_deliveries([f"two{i}@example.co.id" for i in range(2)]))
    mail_sink_count = len(mail_sink.messages())
    seven = _send_statements(email_deliveries([f"seven{i}@example.co.id" for i in range(7)]))

    assert mail_sink_count == 2
    assert len(mail_sink.messages()) == 9
    # Besides one note per accepted message (written before the next message
    # is sent, so that a crash cannot make the batch forget it), statements do
    # not grow with the batch: one read, one claim, one load, one insert of
    # attempts, one update per status, one of notices, one audit append (and
    # the rate-limit store's own, excluded above).
    notes = [sent.count("accepted note") for sent in (two, seven)]
    assert notes == [2, 7]
    assert len(seven) - 7 == len(two) - 2, (two, seven)
    notified = Notice.objects.filter(status=Notice.Status.NOTIFIED).count()
    assert notified == 9
    assert AuditEvent.objects.filter(action="delivery.sent").count() == 9
    assert AuditEvent.objects.filter(action="notice.notified").count() == 9


def test_each_sent_delivery_keeps_its_own_reference_and_attempt(mail_sink, email_deliveries, region):
    deliveries = email_deliveries([f"ref{i}@example.co.id" for i in range(3)])

    deliveries_send(delivery_ids=_ids(deliveries))

    domain = region.email_from_address.rpartition("@")[2]
    for delivery in deliveries:
        delivery.refresh_from_db()
        assert delivery.status == Delivery.Status.SENT
        assert delivery.provider_reference == f"<{delivery.id}@{domain}>"
        [attempt] = delivery.attempts.all()
        assert (attempt.number, attempt.outcome, attempt.provider_reference) == (1, "sent", delivery.provider_reference)


def test_a_throttling_answer_stops_the_batch_and_hands_back_the_rest_uncharged(mail_sink, email_deliveries):
    first, throttled, *rest = email_deliveries(
        ["ok0@example.co.id", "throttle@example.co.id", "ok2@example.co.id", "ok3@example.co.id"]
    )

    report = deliveries_send(delivery_ids=_ids([first, throttled, *rest]))

    assert _statuses([first, throttled, *rest]) == ["sent", "failed_temporary", "pending", "pending"]
    for delivery in rest:
        delivery.refresh_from_db()
        assert delivery.attempt_count == 0  # never tried: not charged
        assert not delivery.attempts.exists()
    assert len(mail_sink.messages()) == 1
    # One retry for the throttled one and the two it held back, after the relay's wait.
    [group] = report.retries
    assert group.delivery_ids == _ids([throttled, *rest])
    assert group.retry_after == 60


def test_an_unreachable_relay_stops_the_batch_after_one_attempt(smtp_down, email_deliveries):
    deliveries = email_deliveries([f"down{i}@example.co.id" for i in range(4)])

    report = deliveries_send(delivery_ids=_ids(deliveries))

    assert report.outcomes == {"retryable": 1, "released": 3}
    assert _statuses(deliveries) == ["failed_temporary", "pending", "pending", "pending"]
    assert DeliveryAttempt.objects.count() == 1
    [group] = report.retries
    assert set(group.delivery_ids) == set(_ids(deliveries))


def test_a_retry_released_again_stays_a_retry(smtp_down, email_deliveries):
    deliveries = email_deliveries([f"again{i}@example.co.id" for i in range(3)])
    deliveries_send(delivery_ids=_ids(deliveries))  # the first fails, two are released

    # The retry batch leads with another delivery this time: the failed one is released.
    deliveries_send(delivery_ids=_ids([deliveries[1], deliveries[0], deliveries[2]]))

    rows = {d.pk: d for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])}
    assert (rows[deliveries[0].pk].status, rows[deliveries[0].pk].attempt_count) == ("failed_temporary", 1)
    assert (rows[deliveries[1].pk].status, rows[deliveries[1].pk].attempt_count) == ("failed_temporary", 1)
    assert (rows[deliveries[2].pk].status, rows[deliveries[2].pk].attempt_count) == ("pending", 0)


def test_two_workers_claiming_the_same_batch_never_share_a_delivery(email_deliveries):
    deliveries = email_deliveries([f"claim{i}@example.co.id" for i in range(3)])
    pks = [delivery.pk for delivery in deliveries]

    first = deliveries_claim(delivery_ids=pks)
    second = deliveries_claim(delivery_ids=pks)

    assert first == pks
    assert second == []
    assert _statuses(deliveries) == ["sending"] * 3


@pytest.mark.django_db(transaction=True)
def test_two_claims_racing_on_the_same_rows_never_both_win(email_deliveries):
    # The second claim runs while the first one's transaction holds the rows
    # (on PostgreSQL it waits on their locks, on SQLite on the write lock)
    # and must find them taken once it may go on, not win them again.
    with transaction.atomic():  # issued as intake issues them
        deliveries = email_deliveries([f"race{i}@example.co.id" for i in range(3)])
    pks = [delivery.pk for delivery in deliveries]
    second: list[object] = []
    started = threading.Event()

    def other_worker():
        try:
            started.set()
            second.extend(deliveries_claim(delivery_ids=pks))
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    with transaction.atomic():
        first = deliveries_claim(delivery_ids=pks)
        thread.start()
        started.wait(timeout=5)
        time.sleep(0.3)  # the other claim is now waiting for this transaction
    thread.join(timeout=30)

    assert first == pks
    assert second == []
    assert _statuses(deliveries) == ["sending"] * 3
    assert set(Delivery.objects.filter(pk__in=pks).values_list("attempt_count", flat=True)) == {1}


def test_a_cancelled_notice_in_a_batch_is_skipped(mail_sink, email_deliveries):
    kept, cancelled = email_deliveries(["kept@example.co.id", "cancelled@example.co.id"])
    Notice.objects.filter(pk=cancelled.notice_id).update(status=Notice.Status.CANCELLED)

    report = deliveries_send(delivery_ids=_ids([kept, cancelled]))

    assert report.outcomes["sent"] == 1
    assert _statuses([kept, cancelled]) == ["sent", "pending"]
    assert len(mail_sink.messages()) == 1


def test_the_last_attempt_is_counted_in_the_database_not_in_the_message(smtp_down, email_deliveries):
    # A delivery re-queued by the sweeper arrives in a fresh message: its
    # earlier attempts still count.
    [delivery] = email_deliveries(["last@example.co.id"])
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.FAILED_TEMPORARY, attempt_count=MAX_ATTEMPTS - 1, last_error="smtp 451 at rcpt"
    )

    report = deliveries_send(delivery_ids=_ids([delivery]))

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    assert report.retries == []
    assert (
        AuditEvent.objects.filter(action="delivery.plan_exhausted").count()
        + AuditEvent.objects.filter(action="delivery.fallback").count()
        == 1
    )


def test_the_batch_task_retries_in_eager_mode_until_every_delivery_is_final(smtp_down, email_deliveries, celery_eager):
    deliveries = email_deliveries([f"eager{i}@example.co.id" for i in range(2)])

    result = delivery_send_batch_task.apply(args=(_ids(deliveries),))

    assert result.successful()
    for delivery in deliveries:
        delivery.refresh_from_db()
        assert delivery.status == Delivery.Status.FAILED_PERMANENT
        assert delivery.attempt_count == MAX_ATTEMPTS


def test_a_mixed_batch_records_each_outcome_on_its_own_delivery(mail_sink, email_deliveries):
    sent, bounced, sent_too = email_deliveries(["fine@example.co.id", "bounce.x@example.co.id", "fine2@example.co.id"])

    report = deliveries_send(delivery_ids=_ids([sent, bounced, sent_too]))

    assert report.outcomes == {"sent": 2, "permanent": 1, "released": 0}
    assert _statuses([sent, bounced, sent_too]) == ["sent", "failed_permanent", "sent"]
    bounced.refresh_from_db()
    assert bounced.last_error == "smtp 550 at rcpt"
    assert bounced.provider_reference == ""
    # Each attempt row holds its own values, column by column.
    attempts = {attempt.delivery_id: attempt for attempt in DeliveryAttempt.objects.all()}
    for delivery, outcome, error in ((sent, "sent", ""), (bounced, "permanent", "smtp 550 at rcpt")):
        attempt = attempts[delivery.pk]
        assert (attempt.number, attempt.provider, attempt.outcome, attempt.error) == (1, "smtp", outcome, error)
        assert attempt.started_at is not None
        assert attempt.duration_ms >= 0
    assert attempts[sent.pk].provider_reference.startswith(f"<{sent.id}@")
    # The notice whose delivery failed for good went on to fallback.
    [handed_on] = AuditEvent.objects.filter(
        action__in=["delivery.plan_exhausted", "delivery.fallback"], object_id=str(bounced.notice_id)
    )
    assert str(bounced.id) in (handed_on.data.get("last_delivery"), handed_on.data.get("from_delivery"))
    assert not AuditEvent.objects.filter(
        action__in=["delivery.plan_exhausted", "delivery.fallback"], object_id=str(sent.notice_id)
    ).exists()


def test_a_slow_provider_cannot_keep_a_batch_sending_past_the_lease(settings, tmp_path, email_relay, email_deliveries):
    # Each message takes 0.15 s to be answered; the budget is a tenth of the
    # sending lease (0.2 s): the batch hands the rest back before the lease
    # could expire under it, uncharged, to be sent again at once.
    settings.CAKRA_SWEEPER = {**settings.CAKRA_SWEEPER, "SENDING_LEASE_SECONDS": 2}
    deliveries = email_deliveries([f"slow{i}@example.co.id" for i in range(4)])
    with MailSink(
        maildir=tmp_path / "slow",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
        reply_delay=0.15,
    ) as sink:
        email_relay(HOST="127.0.0.1", PORT=sink.smtp_port, SECURITY="none")
        report = deliveries_send(delivery_ids=_ids(deliveries))

    assert report.outcomes == {"sent": 2, "released": 2}
    assert _statuses(deliveries) == ["sent", "sent", "pending", "pending"]
    [group] = report.retries
    assert group.delivery_ids == _ids(deliveries[2:])
