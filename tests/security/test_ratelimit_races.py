"""Anti-guessing limits under a burst of parallel attempts: every attempt is
counted atomically before its answer is decided, on every counter store.

Each attempt runs in its own thread with its own database connection (the
SQLite test database is a file, so that works there too), released together
by a barrier so the attempts really overlap.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connections
from django.test import Client

import cakra.portal.lookup as portal_lookup
from cakra.portal.selectors import notice_match_lookup
from cakra.security.models import RateLimitCounter
from cakra.security.ratelimit import Limit, counters_purge, hit, refund, reserve
from tests.portal.conftest import issue_notice

REDIS_TEST_URL = os.environ.get("CAKRA_TEST_REDIS_URL", "")
STORE_BACKENDS = ["database", *(["redis"] if REDIS_TEST_URL else [])]
BURST = 24
# Holds each plate comparison open a moment, so that on code counting only
# after the comparison the whole burst is compared before any count lands.
EVALUATION_DELAY_SECONDS = 0.05

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request, settings):
    """The test runs once per counter store a deployment may use."""
    settings.REDIS_URL = REDIS_TEST_URL if request.param == "redis" else ""
    return request.param


@pytest.fixture
def scope():
    """A scope no other test (nor an earlier run against the same Redis) uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


def in_parallel[T](count: int, attempt: Callable[[int], T]) -> list[T]:
    """Run ``attempt(i)`` for i in range(count), all threads released at once."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(position: int) -> None:
        try:
            barrier.wait()
            results[position] = attempt(position)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return [result for result in results if result is not None]


def test_parallel_hits_on_one_subject_allow_exactly_the_limit(store_backend, scope):
    limit = Limit(scope=scope, count=5, seconds=10**7)

    verdicts = in_parallel(BURST, lambda _: hit(limit, "198.51.100.7"))

    assert Counter(verdicts) == {True: 5, False: BURST - 5}


def test_parallel_wrong_guesses_on_one_number_are_compared_at_most_limit_times(
    store_backend, settings, monkeypatch, vehicle, officer, region
):
    """The per-number failure limit: a burst of wrong plates from many
    addresses at once; no more of them reach the plate comparison than the
    limit allows, and exactly that many get the "no match" answer."""
    failures = 5
    settings.CAKRA_PORTAL_RATE_LIMITS = {
        "client_burst": (1000, 10**7),
        "client_daily": (1000, 10**7),
        "number_failures": (failures, 10**7),
    }
    number = issue_notice(vehicle=vehicle, region=region, capture_id="CAP-RACE", derived=False).notice.number
    compared = []

    def counting_lookup(*, number):
        # Instrumentation around the real selector: counts comparisons and
        # holds each one open a moment, as a slow database would.
        compared.append(number)
        threading.Event().wait(EVALUATION_DELAY_SECONDS)
        return notice_match_lookup(number=number)

    monkeypatch.setattr(portal_lookup, "notice_match_lookup", counting_lookup)

    def guess(position: int) -> int:
        response = Client().post(
            "/cek/", {"number": number, "plate": f"B {1000 + position} ZZZ"}, REMOTE_ADDR=f"198.51.100.{position + 1}"
        )
        return response.status_code

    statuses = in_parallel(BURST, guess)

    assert len(compared) <= failures
    assert Counter(statuses) == {404: failures, 429: BURST - failures}


def test_the_owners_successes_are_refunded(store_backend, settings, vehicle, officer, region):
    """A correct plate gives its reservation back: with one failure left in
    the budget, any number of successes leave that failure available."""
    settings.CAKRA_PORTAL_RATE_LIMITS = {
        "client_burst": (1000, 10**7),
        "client_daily": (1000, 10**7),
        "number_failures": (3, 10**7),
    }
    notice = issue_notice(vehicle=vehicle, region=region, capture_id="CAP-OWN", derived=False).notice

    def look(plate: str, address: str) -> int:
        return Client().post("/cek/", {"number": notice.number, "plate": plate}, REMOTE_ADDR=address).status_code

    assert [look("B 1 AAA", "203.0.113.1"), look("B 2 AAA", "203.0.113.2")] == [404, 404]
    assert [look("B 1234 XYZ", f"198.51.100.{i + 1}") for i in range(6)] == [303] * 6
    assert look("B 3 AAA", "203.0.113.3") == 404
    assert look("B 4 AAA", "203.0.113.4") == 429
    assert look("B 1234 XYZ", "203.0.113.5") == 429


def test_a_refund_never_credits_the_next_window(store_backend, scope, clock):
    limit = Limit(scope=scope, count=1, seconds=100)
    clock.advance_to_window_start(100)
    clock.advance(50)
    reservation = reserve(limit, "subject")
    assert reservation.within_limit

    clock.advance(100)  # the next window
    assert hit(limit, "subject")
    refund(reservation)  # belongs to the window that ended

    assert not hit(limit, "subject")


def test_ended_windows_are_purged_and_live_ones_kept(settings, scope, clock):
    settings.REDIS_URL = ""
    clock.advance_to_window_start(1000)  # the start of a 1000 s window, and of a 100 s one
    clock.advance(50)
    hit(Limit(scope=scope, count=1, seconds=100), "ended")
    hit(Limit(scope=scope, count=1, seconds=1000), "live")

    clock.advance(51)  # the 100 s window has ended, the 1000 s one has not

    assert counters_purge() == 1
    assert RateLimitCounter.objects.count() == 1
    assert not hit(Limit(scope=scope, count=1, seconds=1000), "live")


def test_subjects_are_stored_only_as_keyed_hashes(settings, scope):
    settings.REDIS_URL = ""
    hit(Limit(scope=scope, count=1, seconds=60), "203.0.113.99")

    (key,) = RateLimitCounter.objects.values_list("key", flat=True)
    assert "203.0.113.99" not in key
