"""Rate limits per sender identity, shared by every worker: never exceeded under
concurrency, honouring the provider's "slow down", and never dropping a
delivery or spending one of its attempts while it waits."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connections
from kombu import Queue

from cakra.config.celery import app as celery_app
from cakra.delivery.channels.registry import Provider
from cakra.delivery.channels.store import CacheStore, RedisStore, shared_store
from cakra.delivery.dispatch import DEFER_JITTER_MAX_SECONDS, defer_countdown
from cakra.delivery.models import Delivery
from cakra.delivery.ratelimit import sender_back_off, sender_token_acquire
from cakra.delivery.tasks import delivery_send_batch_task
from cakra.registry.models import ContactPoint
from cakra.security.ratelimit import RateLimitedError
from tests.delivery.helpers import send

SMTP = "cakra.delivery.channels.email.SmtpEmailAdapter"


def _provider(identity, *, rate, burst):
    return Provider(
        name="smtp",
        channel="email",
        backend=SMTP,
        priority=10,
        sender_identity=identity,
        rate_per_second=rate,
        burst=burst,
        options={},
    )


def _new_store(store_backend, settings):
    """A store instance of its own, as another worker process would have."""
    if store_backend == "redis":
        return RedisStore(settings.CACHES["default"]["LOCATION"])
    return CacheStore("default")


@pytest.fixture
def identity(unique_name, store_backend, settings):
    name = unique_name("smtp:relay")
    yield name
    shared_store().forget_identity(name)  # Redis outlives the test


@pytest.fixture
def limited_relay(settings, mail_sink, identity, provider_state, clock):
    """The default email provider, limited to one message a second (no burst),
    waiting no longer than zero seconds in the worker; its second stands still
    until the test (or a wait slept in the worker) moves the clock."""
    entry = settings.CAKRA_PROVIDERS["smtp"]
    settings.CAKRA_PROVIDERS = {
        "smtp": {**entry, "SENDER_IDENTITY": identity, "RATE_PER_SECOND": 1, "BURST": 1},
    }
    settings.CAKRA_SENDER_RATE_LIMITS = {**settings.CAKRA_SENDER_RATE_LIMITS, "PATIENCE_SECONDS": 0}
    return identity


# --- The shared bucket ------------------------------------------------------------


def test_a_burst_is_granted_then_the_next_token_waits(db, settings, store_backend, identity, clock):
    store = shared_store()
    clock.advance_to_window_start(1)  # the database store's windows: the burst is taken early in one

    granted = [store.take(identity=identity, rate=3, burst=3) for _ in range(3)]
    wait = store.take(identity=identity, rate=3, burst=3)

    assert granted == [0.0, 0.0, 0.0]
    assert 0 < wait <= 1.0
    clock.advance(wait - 0.005)
    assert store.take(identity=identity, rate=3, burst=3) > 0  # not a moment before the wait is over
    clock.advance(0.015)
    assert store.take(identity=identity, rate=3, burst=3) == 0.0


def test_identities_do_not_share_a_bucket(db, store_backend, unique_name, clock):
    store = shared_store()
    first, second = unique_name("sms:POLRI"), unique_name("sms:ETLE")

    assert store.take(identity=first, rate=1, burst=1) == 0.0
    assert store.take(identity=first, rate=1, burst=1) > 0
    assert store.take(identity=second, rate=1, burst=1) == 0.0
    for name in (first, second):
        store.forget_identity(name)


def test_workers_racing_for_one_identity_never_exceed_its_limit(transactional_db, settings, store_backend, identity):
    rate = burst = 40
    grants: list[float] = []
    lock = threading.Lock()
    started = time.time()
    deadline = started + 1.5

    def worker():
        store = _new_store(store_backend, settings)  # no lock shared in memory: only the store's own
        try:
            while time.time() < deadline:
                if store.take(identity=identity, rate=rate, burst=burst) == 0.0:
                    with lock:
                        grants.append(time.time())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.time() - started

    assert len(grants) >= rate  # the limit was reached, not starved
    if store_backend == "redis":  # a token bucket: the burst, then the rate
        assert len(grants) <= burst + rate * elapsed + 1
    else:  # fixed one-second windows: at most `rate` in each
        windows = int(started + elapsed) - int(started) + 1
        assert len(grants) <= rate * windows


def test_a_hold_stops_every_worker_until_it_expires(db, settings, store_backend, identity, clock):
    this_worker, other_worker = shared_store(), _new_store(store_backend, settings)

    this_worker.hold(identity=identity, seconds=0.6, rate=20, burst=20)
    this_worker.hold(identity=identity, seconds=0.1, rate=20, burst=20)  # a shorter hold does not shorten it
    wait = other_worker.take(identity=identity, rate=20, burst=20)

    assert 0.4 < wait <= 0.6
    clock.advance(wait - 0.05)
    assert other_worker.take(identity=identity, rate=20, burst=20) > 0  # still held
    clock.advance(0.15)
    assert other_worker.take(identity=identity, rate=20, burst=20) == 0.0


def test_after_a_hold_sending_resumes_at_the_identitys_pace(db, settings, store_backend, identity, clock):
    store = shared_store()
    clock.advance_to_window_start(1)  # the database store's windows: the hold ends early in one
    store.hold(identity=identity, seconds=0.2, rate=20, burst=20)
    clock.advance(0.2 + 0.06)

    granted = sum(store.take(identity=identity, rate=20, burst=20) == 0.0 for _ in range(40))

    if store_backend == "redis":
        assert granted == 1  # the bucket restarts empty: the steady rate, not a burst of 20
    else:
        assert 1 <= granted <= 20  # a fresh fixed window: at most its limit


# --- Taking a token for a send ---------------------------------------------------


def test_a_short_wait_is_slept_in_the_worker_and_a_long_one_raises(db, store_backend, identity, clock):
    provider = _provider(identity, rate=1, burst=1)
    sender_token_acquire(provider, patience=0)

    with pytest.raises(RateLimitedError) as raised:
        sender_token_acquire(provider, patience=0)
    assert 0 < raised.value.wait <= 1.0
    started = clock.monotonic()
    sender_token_acquire(provider, patience=2.0)
    assert raised.value.wait <= clock.monotonic() - started <= 1.5  # the wait was slept, here


def test_an_unreachable_store_defers_the_send_instead_of_sending_blind(db, settings, closed_port):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port}/0",
        }
    }

    with pytest.raises(RateLimitedError) as raised:
        sender_token_acquire(_provider("smtp:relay-main", rate=100, burst=100))

    assert raised.value.wait == settings.CAKRA_SENDER_RATE_LIMITS["STORE_DOWN_WAIT_SECONDS"]


def test_a_providers_retry_after_is_honoured_but_capped(db, settings, store_backend, identity):
    provider = _provider(identity, rate=10, burst=10)

    assert sender_back_off(provider, retry_after=86_400) == settings.CAKRA_SENDER_RATE_LIMITS["MAX_HOLD_SECONDS"]
    assert sender_back_off(provider, retry_after=None) == settings.CAKRA_SENDER_RATE_LIMITS["DEFAULT_HOLD_SECONDS"]
    assert shared_store().take(identity=identity, rate=10, burst=10) > 590


# --- The sending service and the task ------------------------------------------


def test_a_rate_limited_delivery_stays_pending_with_no_attempt_spent(limited_relay, delivery, mail_sink):
    shared_store().take(identity=limited_relay, rate=1, burst=1)  # another worker took this second's token

    report = send(delivery)

    assert report.deferred == [("email", [str(delivery.id)])]
    assert report.deferred_wait > 0
    assert (delivery.status, delivery.attempt_count) == (Delivery.Status.PENDING, 0)
    assert not delivery.attempts.exists()
    assert mail_sink.messages() == []


def test_a_throttling_answer_holds_the_identity_for_every_worker(limited_relay, delivery, mail_sink):
    contact = ContactPoint.objects.get(pk=delivery.contact_point_id)
    contact.value = "throttle@example.co.id"
    contact.save(update_fields=["value"])

    report = send(delivery)
    assert report.retries

    assert report.retries[0].retry_after == 60
    assert shared_store().take(identity=limited_relay, rate=1, burst=1) > 59  # every worker now waits
    deferred = send(delivery)  # the retry too, without spending an attempt
    assert deferred.deferred_wait > 59
    assert (delivery.status, delivery.attempt_count) == (Delivery.Status.FAILED_TEMPORARY, 1)
    assert list(delivery.attempts.values_list("outcome", flat=True)) == ["throttled"]


def test_the_task_reschedules_a_rate_limited_send_without_counting_a_retry(limited_relay, delivery):
    shared_store().take(identity=limited_relay, rate=1, burst=1)
    queue_name = f"test-defer-{uuid.uuid4().hex[:8]}"
    with celery_app.connection_for_write() as connection:
        queue = Queue(queue_name).bind(connection.default_channel)
        queue.declare()
        delivery_send_batch_task.push_request(  # type: ignore[call-arg]  # celery-types omits the request fields
            id=str(uuid.uuid4()),
            args=[[str(delivery.id)]],
            kwargs={},
            retries=3,
            is_eager=False,
            delivery_info={"exchange": "", "routing_key": queue_name},
        )
        try:
            delivery_send_batch_task.run([str(delivery.id)])  # what the worker runs: returns, no Retry raised
        finally:
            delivery_send_batch_task.pop_request()
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:  # AMQP routes a moment after publishing
            message = queue.get(no_ack=True, accept=["json"])
            time.sleep(0.05 if message is None else 0)
        queue.delete()

    assert message is not None
    headers: dict[str, object] = dict(message.headers)
    assert headers["task"] == delivery_send_batch_task.name
    assert headers["eta"] is not None
    args, _kwargs, _embed = message.decode()
    assert args == [[str(delivery.id)]]
    delivery.refresh_from_db()
    # Waiting for a token is not a try: nothing claimed, no attempt charged.
    assert (delivery.status, delivery.attempt_count) == (Delivery.Status.PENDING, 0)


def test_an_eager_task_waits_for_its_token_then_sends(limited_relay, delivery, mail_sink, celery_eager):
    shared_store().take(identity=limited_relay, rate=1, burst=1)

    result = delivery_send_batch_task.apply(args=([str(delivery.id)],))

    assert result.successful()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == (Delivery.Status.SENT, 1)
    assert len(mail_sink.messages()) == 1


def test_deferrals_are_spread_after_the_wait():
    countdowns = [defer_countdown(wait=2.0) for _ in range(200)]

    assert all(2.0 <= c <= 3.0 for c in countdowns)
    assert len(set(countdowns)) > 150
    assert all(60 <= defer_countdown(wait=60) <= 60 + DEFER_JITTER_MAX_SECONDS for _ in range(50))
