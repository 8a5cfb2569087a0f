"""The sweeper: a lost trigger, a killed worker or a provider that never
confirms must not lose a notice.

Triggers go through the real broker of the run (the filesystem broker on the
embedded default, RabbitMQ under CELERY_BROKER_URL): a test reads back what
the sweeper published and runs it as a worker would, against the real SMTP
sink.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from kombu import Queue

from cakra.api.intake import EvidenceSubmission, ViolationSubmission, violation_receive
from cakra.audit.models import AuditEvent
from cakra.config.celery import app as celery_app
from cakra.delivery.dispatch import RETRY_BACKOFF_MAX_SECONDS, channel_backlogs
from cakra.delivery.models import Delivery
from cakra.delivery.outcomes import deliveries_record_outcomes
from cakra.delivery.routing import provider_choose
from cakra.delivery.selectors import deliveries_get_for_send
from cakra.delivery.sending import deliveries_attempt, deliveries_claim
from cakra.delivery.sweeper import (
    LEASE_EXPIRED,
    NOT_CONFIRMED,
    deliveries_sweep_stuck,
    deliveries_sweep_unconfirmed,
)
from cakra.delivery.tasks import (
    delivery_send_batch_task,
    delivery_sweep_stuck_task,
    delivery_sweep_unconfirmed_task,
)
from cakra.enforcement.models import Notice
from cakra.ops.management.commands.run import WORKER_QUEUES
from cakra.simulators.smtp import MailSink
from tests.api.helpers import jpeg_bytes
from tests.clock import frozen_clock
from tests.delivery.helpers import send
from tests.e2e.processes import celery_worker, wait_for
from tests.factories import ApiKeyFactory, VehicleFactory, make_notice, make_owner

PENDING_LEASE = 300
SENDING_LEASE = 600
RETRY_MARGIN = 300
RETRY_LEASE = RETRY_BACKOFF_MAX_SECONDS + RETRY_MARGIN
ALL_QUEUES = ("email", "whatsapp", "sms", "post", "evidence", "celery")


@pytest.fixture(autouse=True)
def sweeper_settings(settings):
    settings.CAKRA_SWEEPER = {
        "PENDING_LEASE_SECONDS": PENDING_LEASE,
        "SENDING_LEASE_SECONDS": SENDING_LEASE,
        "RETRY_MARGIN_SECONDS": RETRY_MARGIN,
        "BATCH_SIZE": 5000,
        "MAX_BACKLOG": 1000,
    }
    settings.CAKRA_UNCONFIRMED_TIMEOUT_CHANNELS = ["whatsapp", "sms", "email"]


@pytest.fixture(autouse=True)
def empty_queues():
    """Queues start and end empty: what a test reads back is what it published."""
    purge(*ALL_QUEUES)
    yield
    purge(*ALL_QUEUES)


def purge(*names):
    with celery_app.connection_for_write() as connection:
        for name in names:
            queue = Queue(name).bind(connection.default_channel)
            queue.declare()
            queue.purge()


def published(queue_name, *, expect=None, timeout=5.0):
    """Take every message waiting in ``queue_name``: [(task name, args)].

    AMQP routes a message a moment after it is published: wait until
    ``expect`` messages are there (or a short settle time when none is expected).
    """
    found = []
    deadline = time.monotonic() + (timeout if expect else 0.3)
    with celery_app.connection_for_write() as connection:
        queue = Queue(queue_name).bind(connection.default_channel)
        queue.declare()
        while True:
            message = queue.get(no_ack=True, accept=["json"])
            if message is not None:
                args, _kwargs, _embed = message.decode()
                found.append((message.headers["task"], tuple(args)))
                continue
            if (expect is not None and len(found) >= expect) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def run_as_worker(messages):
    """What a worker does with the messages read back: run each task."""
    for task_name, args in messages:
        assert task_name == delivery_send_batch_task.name
        result = delivery_send_batch_task.apply(args=args)
        assert result.successful(), result.traceback


def later(seconds):
    return timezone.now() + timedelta(seconds=seconds)


def events(action, object_id):
    return list(AuditEvent.objects.filter(action=action, object_id=str(object_id)).order_by("seq"))


def issue_notice(*, region, key, vehicle, capture_id):
    return make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id=capture_id,
        camera_id="CAM-7",
        captured_at=timezone.now() - timedelta(hours=3),
        location="Jl. M.H. Thamrin, Jakarta Pusat",
        article_code="287(1)",
    )


@pytest.fixture
def two_step_notice(settings, region, vehicle, pre_validated_key):
    """A notice whose plan is email, then the printed letter."""
    settings.CAKRA_ENABLED_CHANNELS = ["email", "post"]
    region.channel_order = ["email", "post"]
    region.save(update_fields=["channel_order"])
    key, _token = pre_validated_key
    return issue_notice(region=region, key=key, vehicle=vehicle, capture_id="CAP-TWO-STEP")


def sent(delivery):
    send(delivery)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    return delivery


# --- Stuck: sending (a worker killed between claim and record) -------------------


def test_a_delivery_left_sending_by_a_killed_worker_is_sent_after_the_lease(
    mail_sink, delivery, django_capture_on_commit_callbacks
):
    # The worker claims the delivery, then dies before the provider call returns.
    assert deliveries_claim(delivery_ids=[delivery.pk]) == [delivery.pk]

    with django_capture_on_commit_callbacks(execute=True):
        within_lease = deliveries_sweep_stuck(now=later(SENDING_LEASE - 5))
    assert within_lease.sending_expired == 0
    assert published("email") == []

    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_sweep_stuck(now=later(SENDING_LEASE + 1))

    assert report.sending_expired == 1
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_TEMPORARY
    assert delivery.last_error == LEASE_EXPIRED
    [expired] = events("delivery.lease_expired", delivery.id)
    assert expired.data == {
        "notice": str(delivery.notice_id),
        "channel": "email",
        "attempt": 1,
        "status": "failed_temporary",
        "reason": LEASE_EXPIRED,
    }
    messages = published("email", expect=1)
    assert messages == [(delivery_send_batch_task.name, ([str(delivery.id)],))]

    run_as_worker(messages)

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert delivery.attempt_count == 2
    # The lost attempt left no row; the second one is numbered after it.
    assert list(delivery.attempts.values_list("number", "outcome")) == [(2, "sent")]
    assert len(mail_sink.messages()) == 1


def test_a_live_send_that_outlasts_the_lease_is_kept_as_an_attempt_only(
    mail_sink, delivery, django_capture_on_commit_callbacks
):
    # A worker that is slow but alive records its outcome after the sweeper
    # gave its lease back: the attempt is kept, the status is not overwritten.
    assert deliveries_claim(delivery_ids=[delivery.pk]) == [delivery.pk]
    loaded = deliveries_get_for_send(delivery_ids=[delivery.pk])
    results, _released = deliveries_attempt(loaded, provider=provider_choose("email"))
    with django_capture_on_commit_callbacks(execute=True):
        deliveries_sweep_stuck(now=later(SENDING_LEASE + 1))

    recorded = deliveries_record_outcomes(deliveries=loaded, results=results, provider="smtp")
    assert recorded.statuses == {}  # nothing applied: the delivery had left "sending"

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_TEMPORARY
    assert list(delivery.attempts.values_list("number", "outcome")) == [(1, "sent")]
    assert len(published("email", expect=1)) == 1


# --- Stuck: pending (a lost trigger) ----------------------------------------------


def test_a_lost_pending_trigger_is_published_again_and_the_notice_is_sent(
    mail_sink, delivery, django_capture_on_commit_callbacks
):
    # The fixture's trigger was never published (its transaction's on-commit
    # hook does not run in this test): exactly a message lost in a crash.
    assert delivery.status == Delivery.Status.PENDING

    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep_stuck(now=later(PENDING_LEASE - 5)).pending_requeued == 0
    assert published("email") == []

    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_sweep_stuck(now=later(PENDING_LEASE + 1))

    assert report.pending_requeued == 1
    messages = published("email", expect=1)
    assert messages == [(delivery_send_batch_task.name, ([str(delivery.id)],))]
    run_as_worker(messages)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert Notice.objects.get(pk=delivery.notice_id).status == Notice.Status.NOTIFIED
    assert len(mail_sink.messages()) == 1


def test_a_sweep_does_not_publish_the_same_row_again_within_the_lease(delivery, django_capture_on_commit_callbacks):
    moment = later(PENDING_LEASE + 1)
    with django_capture_on_commit_callbacks(execute=True):
        first = deliveries_sweep_stuck(now=moment)
        second = deliveries_sweep_stuck(now=moment + timedelta(seconds=PENDING_LEASE - 5))

    assert (first.pending_requeued, second.pending_requeued) == (1, 0)
    assert len(published("email", expect=1)) == 1
    # Once its lease has passed again, a still-pending delivery is published again.
    with django_capture_on_commit_callbacks(execute=True):
        third = deliveries_sweep_stuck(now=moment + timedelta(seconds=PENDING_LEASE + 1))
    assert third.pending_requeued == 1


def test_sweeps_are_bounded_oldest_first_and_cover_everything_over_several_runs(
    settings, delivery, django_capture_on_commit_callbacks
):
    settings.CAKRA_SWEEPER = {**settings.CAKRA_SWEEPER, "BATCH_SIZE": 3}
    # Six more stuck deliveries, each older than the one before it.
    extra = Delivery.objects.bulk_create(
        Delivery(notice_id=delivery.notice_id, channel="email", step=step, contact_point_id=delivery.contact_point_id)
        for step in range(2, 8)
    )
    base = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(updated_at=base)
    for age, row in enumerate(extra, start=1):
        Delivery.objects.filter(pk=row.pk).update(updated_at=base - timedelta(minutes=age))
    oldest_first = [str(row.pk) for row in reversed(extra)] + [str(delivery.pk)]
    moment = base + timedelta(seconds=PENDING_LEASE + 1)

    runs = []
    for expected in (3, 3, 1, 0):
        with django_capture_on_commit_callbacks(execute=True):
            assert deliveries_sweep_stuck(now=moment).pending_requeued == expected
        runs.append(
            {delivery_id for _task, args in published("email", expect=min(expected, 1)) for delivery_id in args[0]}
        )

    assert runs == [set(oldest_first[:3]), set(oldest_first[3:6]), set(oldest_first[6:]), set()]


def test_a_cancelled_notice_is_not_sent_again(delivery, django_capture_on_commit_callbacks):
    Notice.objects.filter(pk=delivery.notice_id).update(status=Notice.Status.CANCELLED)

    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_sweep_stuck(now=later(PENDING_LEASE + 1))

    assert report.pending_requeued == 0
    assert published("email") == []


def test_pending_deliveries_wait_while_their_queue_has_a_backlog(
    settings, delivery, django_capture_on_commit_callbacks
):
    settings.CAKRA_SWEEPER = {**settings.CAKRA_SWEEPER, "MAX_BACKLOG": 2}
    # Three triggers of other deliveries wait in the email queue: the stuck
    # one is most likely among such a backlog, not lost.
    for _ in range(3):
        delivery_send_batch_task.apply_async(args=(["00000000-0000-0000-0000-000000000000"],), queue="email")
    wait_for_backlog("email", 3)

    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_sweep_stuck(now=later(PENDING_LEASE + 1))
    assert report.backlogged == ["email"]
    assert report.pending_requeued == 0

    purge("email")
    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_sweep_stuck(now=later(PENDING_LEASE + 1))
    assert report.backlogged == []
    assert report.pending_requeued == 1
    assert published("email", expect=1) == [(delivery_send_batch_task.name, ([str(delivery.id)],))]


def wait_for_backlog(queue_name, count):
    deadline = time.monotonic() + 5
    while channel_backlogs([queue_name])[queue_name] != count:
        assert time.monotonic() < deadline, "the broker never reported the backlog"
        time.sleep(0.05)


# --- Stuck: failed_temporary (a lost retry) ------------------------------------------


def test_a_lost_retry_is_published_again_after_the_longest_backoff(
    mail_sink, email_relay, closed_port, delivery, django_capture_on_commit_callbacks
):
    email_relay(PORT=closed_port)
    assert send(delivery).retries
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_TEMPORARY
    email_relay(PORT=mail_sink.smtp_port)  # the relay is back; the retry message was lost

    with django_capture_on_commit_callbacks(execute=True):
        waiting = deliveries_sweep_stuck(now=later(RETRY_LEASE - 5))
    assert waiting.retries_requeued == 0
    assert published("email") == []

    with django_capture_on_commit_callbacks(execute=True):
        report = deliveries_sweep_stuck(now=later(RETRY_LEASE + 1))

    assert report.retries_requeued == 1
    run_as_worker(published("email", expect=1))
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert list(delivery.attempts.order_by("number").values_list("outcome", flat=True)) == ["retryable", "sent"]
    assert len(mail_sink.messages()) == 1


def test_the_beat_task_runs_the_stuck_sweep(delivery, django_capture_on_commit_callbacks):
    Delivery.objects.filter(pk=delivery.pk).update(updated_at=timezone.now() - timedelta(seconds=PENDING_LEASE + 5))

    with django_capture_on_commit_callbacks(execute=True):
        result = delivery_sweep_stuck_task.apply()

    assert result.successful()
    assert result.result == {"pending_requeued": 1, "sending_expired": 0, "retries_requeued": 0, "backlogged": []}
    assert len(published("email", expect=1)) == 1


# --- Unconfirmed: the cut-off timeout ------------------------------------------------


def test_a_sent_delivery_not_confirmed_by_the_cut_off_fails_and_the_plan_moves_on(
    mail_sink, two_step_notice, region, django_capture_on_commit_callbacks
):
    email, post = two_step_notice.deliveries.order_by("step")
    sent(email)
    cutoff = region.digital_cutoff_hours * 3600

    assert deliveries_sweep_unconfirmed(now=later(cutoff - 60)) == 0
    email.refresh_from_db()
    assert email.status == Delivery.Status.SENT

    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep_unconfirmed(now=later(cutoff + 1)) == 1

    email.refresh_from_db()
    post.refresh_from_db()
    assert email.status == Delivery.Status.FAILED_PERMANENT
    assert email.last_error == NOT_CONFIRMED
    assert post.status == Delivery.Status.PENDING
    [timed_out] = events("delivery.timed_out", email.id)
    assert timed_out.data["reason"] == NOT_CONFIRMED
    assert timed_out.data["cutoff_hours"] == region.digital_cutoff_hours
    [fallback] = events("delivery.fallback", two_step_notice.id)
    assert fallback.data["from_delivery"] == str(email.id)
    assert fallback.data["to_delivery"] == str(post.id)
    assert fallback.data["reason"] == f"{NOT_CONFIRMED} ({region.digital_cutoff_hours} h)"
    assert timed_out.seq < fallback.seq  # one transaction, in this order
    # The next step's trigger is published on commit, to its channel's queue.
    assert published("post", expect=1) == [(delivery_send_batch_task.name, ([str(post.id)],))]


def test_the_timeout_is_idempotent(mail_sink, two_step_notice, region):
    email = sent(two_step_notice.deliveries.get(step=1))
    moment = later(region.digital_cutoff_hours * 3600 + 1)

    assert deliveries_sweep_unconfirmed(now=moment) == 1
    assert deliveries_sweep_unconfirmed(now=moment) == 0

    assert len(events("delivery.timed_out", email.id)) == 1
    assert len(events("delivery.fallback", two_step_notice.id)) == 1


@pytest.mark.parametrize("confirmed", [Delivery.Status.DELIVERED, Delivery.Status.READ])
def test_confirmed_deliveries_are_left_alone(mail_sink, two_step_notice, region, confirmed):
    email = sent(two_step_notice.deliveries.get(step=1))
    Delivery.objects.filter(pk=email.pk).update(status=confirmed, delivered_at=timezone.now())

    assert deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 * 10)) == 0

    email.refresh_from_db()
    assert email.status == confirmed
    assert two_step_notice.deliveries.get(step=2).status == Delivery.Status.PLANNED


def test_channels_without_the_timeout_are_left_alone(settings, mail_sink, two_step_notice, region):
    settings.CAKRA_UNCONFIRMED_TIMEOUT_CHANNELS = ["whatsapp", "sms"]
    email = sent(two_step_notice.deliveries.get(step=1))

    assert deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 * 10)) == 0
    email.refresh_from_db()
    assert email.status == Delivery.Status.SENT


def test_a_region_with_no_cut_off_never_times_out(mail_sink, two_step_notice, region):
    email = sent(two_step_notice.deliveries.get(step=1))
    region.digital_cutoff_hours = 0
    region.save(update_fields=["digital_cutoff_hours"])

    assert deliveries_sweep_unconfirmed(now=later(3600 * 24 * 30)) == 0
    email.refresh_from_db()
    assert email.status == Delivery.Status.SENT


def test_a_notice_the_owner_already_confirmed_is_not_sent_again(mail_sink, two_step_notice, region):
    email = sent(two_step_notice.deliveries.get(step=1))
    Notice.objects.filter(pk=two_step_notice.pk).update(status=Notice.Status.CONFIRMED)

    assert deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 + 1)) == 0
    email.refresh_from_db()
    assert email.status == Delivery.Status.SENT


def test_each_region_has_its_own_cut_off(settings, mail_sink, region, other_region, pre_validated_key):
    settings.CAKRA_ENABLED_CHANNELS = ["email", "post"]
    for polda in (region, other_region):
        polda.channel_order = ["email", "post"]
    region.digital_cutoff_hours = 48
    other_region.digital_cutoff_hours = 12
    region.save()
    other_region.save()
    metro_key, _ = pre_validated_key
    jabar_key, _ = ApiKeyFactory.with_token(region=other_region, pre_validated=True)
    metro = issue_notice(region=region, key=metro_key, vehicle=VehicleFactory(plate="B 77 CUT"), capture_id="CAP-METRO")
    jabar = issue_notice(
        region=other_region, key=jabar_key, vehicle=VehicleFactory(plate="D 77 CUT"), capture_id="CAP-JABAR"
    )
    metro_email, jabar_email = (sent(notice.deliveries.get(step=1)) for notice in (metro, jabar))

    assert deliveries_sweep_unconfirmed(now=later(13 * 3600)) == 1

    metro_email.refresh_from_db()
    jabar_email.refresh_from_db()
    assert (metro_email.status, jabar_email.status) == (Delivery.Status.SENT, Delivery.Status.FAILED_PERMANENT)
    assert jabar.deliveries.get(step=2).status == Delivery.Status.PENDING
    assert deliveries_sweep_unconfirmed(now=later(49 * 3600)) == 1
    metro_email.refresh_from_db()
    assert metro_email.status == Delivery.Status.FAILED_PERMANENT


def test_the_last_step_timing_out_records_the_plan_as_exhausted(mail_sink, delivery, region):
    email = sent(delivery)  # the default plan here is email only

    assert deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 + 1)) == 1

    [exhausted] = events("delivery.plan_exhausted", email.notice_id)
    assert exhausted.data["last_delivery"] == str(email.id)
    assert exhausted.data["reason"].startswith(NOT_CONFIRMED)


def test_the_timeout_is_bounded_per_run(settings, mail_sink, region, pre_validated_key):
    settings.CAKRA_SWEEPER = {**settings.CAKRA_SWEEPER, "BATCH_SIZE": 2}
    key, _ = pre_validated_key
    vehicle = VehicleFactory(plate="B 88 BND")
    for number in range(3):
        sent(issue_notice(region=region, key=key, vehicle=vehicle, capture_id=f"CAP-B{number}").deliveries.get())
    moment = later(region.digital_cutoff_hours * 3600 + 1)

    assert [deliveries_sweep_unconfirmed(now=moment) for _ in range(3)] == [2, 1, 0]


def test_the_beat_task_runs_the_timeout(mail_sink, delivery, region):
    email = sent(delivery)
    Delivery.objects.filter(pk=email.pk).update(
        updated_at=timezone.now() - timedelta(hours=region.digital_cutoff_hours, seconds=5),
        sent_at=timezone.now() - timedelta(hours=region.digital_cutoff_hours, seconds=5),
    )

    result = delivery_sweep_unconfirmed_task.apply()

    assert result.successful()
    assert result.result == 1
    email.refresh_from_db()
    assert email.status == Delivery.Status.FAILED_PERMANENT


# --- Every notice accounted for ----------------------------------------------------


def assert_every_notice_accounted_for(notices):
    """Each notice has a step that reached the citizen's provider, or every
    failure it had moved the plan on, up to an explicit plan_exhausted."""
    for notice in notices:
        steps = list(notice.deliveries.order_by("step"))
        statuses = [step.status for step in steps]
        reached = {Delivery.Status.SENT, Delivery.Status.DELIVERED, Delivery.Status.READ}
        failures = [step for step in steps if step.status == Delivery.Status.FAILED_PERMANENT]
        moves = AuditEvent.objects.filter(object_id=str(notice.id), action="delivery.fallback").count()
        exhausted = AuditEvent.objects.filter(object_id=str(notice.id), action="delivery.plan_exhausted").count()
        assert len(failures) == moves + exhausted, (notice.number, statuses)
        if not reached & set(statuses):
            assert exhausted == 1 or Delivery.Status.PENDING in statuses, (notice.number, statuses)
        # Failed steps come first, then at most one live step, then planned ones.
        live = [s for s in statuses if s not in {Delivery.Status.FAILED_PERMANENT, Delivery.Status.PLANNED}]
        assert len(live) <= 1, statuses
        assert statuses == sorted(statuses, key=lambda s: {"failed_permanent": 0, "planned": 2}.get(s, 1))


def test_counts_add_up_across_sent_timed_out_confirmed_and_lost_notices(
    settings, mail_sink, region, pre_validated_key, django_capture_on_commit_callbacks
):
    settings.CAKRA_ENABLED_CHANNELS = ["email", "post"]
    region.channel_order = ["email", "post"]
    region.save(update_fields=["channel_order"])
    key, _ = pre_validated_key
    email_only = VehicleFactory(plate="B 11 ONE", owner=make_owner(address=""))
    both = VehicleFactory(plate="B 22 TWO")
    notices = [
        issue_notice(region=region, key=key, vehicle=both if n % 2 else email_only, capture_id=f"CAP-ALL-{n}")
        for n in range(6)
    ]
    # 0, 1: sent and confirmed; 2, 3: sent, never confirmed; 4: worker killed; 5: trigger lost.
    for notice in notices[:4]:
        sent(notice.deliveries.get(step=1))
    for notice in notices[:2]:
        notice.deliveries.filter(step=1).update(status=Delivery.Status.DELIVERED)
    killed = notices[4].deliveries.get(step=1)
    assert deliveries_claim(delivery_ids=[killed.pk]) == [killed.pk]

    with django_capture_on_commit_callbacks(execute=True):
        deliveries_sweep_stuck(now=later(SENDING_LEASE + 1))
    run_as_worker(published("email", expect=2))
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 + 1)) == 4

    assert_every_notice_accounted_for(notices)
    # The two killed or lost ones were sent by the recovery, then (never
    # confirmed either) timed out with the two others.
    assert Delivery.objects.filter(notice__in=notices, step=1, status="failed_permanent").count() == 4
    assert len(mail_sink.messages()) == 6
    # Post steps activated only for owners with a postal address.
    post_pending = Delivery.objects.filter(notice__in=notices, channel="post", status="pending").count()
    assert post_pending == 2
    assert len(published("post", expect=post_pending)) == post_pending


# --- End to end: a real worker killed with SIGKILL mid-batch ---------------------------

KILL_NOTICES = 30


def sink_message_ids(sink):
    return [str(message.parsed()["Message-ID"]) for message in sink.messages()]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_no_notice_and_sends_each_once(settings, tmp_path, vehicle, pre_validated_key):
    """30 notices, a worker SIGKILLed after a few sends (one message stored by
    the relay but not yet acknowledged), then the sweeper and a fresh worker:
    every notice is sent, and the only possible second copy is the message in
    flight at the kill, carrying the same Message-ID as the first."""
    key, _token = pre_validated_key
    image = jpeg_bytes(size=(320, 240))
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
        reply_delay=0.25,  # stored at once, answered later: a kill lands mid-send
    ) as sink:
        for number in range(KILL_NOTICES):
            violation_receive(
                api_key=key,
                submission=ViolationSubmission(
                    capture_id=f"KILL-{number}",
                    camera_id="CAM-KILL",
                    captured_at=timezone.now() - timedelta(hours=1),
                    location="Jl. Jend. Sudirman, Jakarta Pusat",
                    plate=vehicle.plate,
                    article_code="287(1)",
                    evidence=(EvidenceSubmission(kind="vehicle", content=image),),
                ),
            )
        deliveries = Delivery.objects.filter(notice__violation__capture_id__startswith="KILL-")
        assert deliveries.count() == KILL_NOTICES  # each trigger was published on its intake's commit
        smtp = {"CAKRA_SMTP_HOST": "127.0.0.1", "CAKRA_SMTP_PORT": str(sink.smtp_port), "CAKRA_SMTP_SECURITY": "none"}

        with contextlib.suppress(ProcessLookupError), celery_worker(queues="email", extra_env=smtp) as doomed:
            wait_for(lambda: sink.count() >= 4, timeout=60, what="the first few sends")
            os.killpg(doomed.pid, signal.SIGKILL)
            # Wait for death without reaping, so the helper's own clean-up finds the group.
            os.waitid(os.P_PID, doomed.pid, os.WEXITED | os.WNOWAIT)

        sent_at_kill = deliveries.filter(status=Delivery.Status.SENT).count()
        assert 0 < sent_at_kill < KILL_NOTICES, "the kill must land mid-batch"
        in_flight = set(deliveries.filter(status=Delivery.Status.SENDING).values_list("id", flat=True))
        assert len(in_flight) <= 1  # one worker process, one message at a time

        # The sweeper with leases shortened for the test: everything pending
        # (its trigger lost with the dead worker's prefetch, on the embedded
        # broker) and the delivery it was sending.
        settings.CAKRA_SWEEPER = {**settings.CAKRA_SWEEPER, "PENDING_LEASE_SECONDS": 1, "SENDING_LEASE_SECONDS": 1}
        # Frozen here, not for the whole test: the dead worker wrote its rows on real time.
        with frozen_clock() as clock:
            clock.advance(1.2)
            sweep = delivery_sweep_stuck_task.apply()
        assert sweep.successful(), sweep.traceback
        report = sweep.result
        assert isinstance(report, dict)
        assert report["sending_expired"] == len(in_flight)
        assert report["pending_requeued"] == KILL_NOTICES - sent_at_kill - len(in_flight)

        with celery_worker(queues="email", extra_env=smtp):
            wait_for(
                lambda: deliveries.filter(status=Delivery.Status.SENT).count() == KILL_NOTICES,
                timeout=60,
                what="every delivery sent by the fresh worker",
            )

        message_ids = sink_message_ids(sink)

    # No loss: one distinct Message-ID per notice, each the reference its delivery recorded.
    references = set(deliveries.values_list("provider_reference", flat=True))
    assert len(references) == KILL_NOTICES
    assert set(message_ids) == references
    # Duplicates only for the message in flight at the kill (stored by the
    # relay, never acknowledged to the dead worker), under the same Message-ID.
    duplicates = len(message_ids) - len(set(message_ids))
    assert duplicates <= len(in_flight)
    for delivery in deliveries.filter(pk__in=in_flight):
        assert delivery.attempt_count == 2
        assert list(delivery.attempts.values_list("number", "outcome")) == [(2, "sent")]
        assert AuditEvent.objects.filter(action="delivery.lease_expired", object_id=str(delivery.id)).count() == 1
    assert all(d.attempts.filter(outcome="sent").count() == 1 for d in deliveries)
    assert Notice.objects.filter(violation__capture_id__startswith="KILL-", status=Notice.Status.NOTIFIED).count() == (
        KILL_NOTICES
    )
    call_command("audit", "verify")


def test_beat_schedules_both_sweeps_on_a_queue_the_worker_consumes(settings):
    scheduled = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert scheduled[delivery_sweep_stuck_task.name]["schedule"] == 60.0
    assert scheduled[delivery_sweep_unconfirmed_task.name]["schedule"] == 300.0
    for task in (delivery_sweep_stuck_task, delivery_sweep_unconfirmed_task):
        assert task.name in celery_app.tasks
        # Routed nowhere special: the default queue, which the worker command consumes.
        assert scheduled[task.name].get("options", {}).get("queue") is None
    assert celery_app.conf.task_default_queue in WORKER_QUEUES.split(",")
