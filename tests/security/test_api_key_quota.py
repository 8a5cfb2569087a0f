"""Attacks on API fairness: one key's flood must not starve another key.

Runs against a real threaded server (pytest-django's ``live_server``) with
real sockets: every request goes through authentication, the quotas in the
shared store and the lease middleware, as in production.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from urllib.parse import urlsplit

import pytest
from django.http import HttpRequest

from cakra.api.quota import api_key_request_admit, api_key_request_release
from cakra.delivery.channels.store import REDIS_CACHE_BACKEND
from cakra.security.ratelimit import RateLimitedError
from tests.factories import ApiKeyFactory, make_violation

FLOOD_THREADS = 8
B_REQUESTS = 20
B_PAUSE_SECONDS = 0.05  # B stays well inside its own rate quota
REDIS_TEST_URL = os.environ.get("CAKRA_TEST_REDIS_URL", "")


def limits(*, rate: float, burst: int, in_flight: int) -> dict[str, object]:
    return {"RATE_PER_SECOND": rate, "BURST": burst, "MAX_IN_FLIGHT": in_flight, "LEASE_SECONDS": 60, "KEYS": {}}


class Api:
    """One keep-alive connection per thread to the live server."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self.local = threading.local()
        self.connections: list[HTTPConnection] = []

    def close(self) -> None:
        for conn in self.connections:
            conn.close()

    def get(self, path: str) -> tuple[int, dict[str, str], bytes, float]:
        if not hasattr(self.local, "conn"):
            self.local.conn = HTTPConnection(self.host, self.port, timeout=30)
            self.connections.append(self.local.conn)
        started = time.perf_counter()
        self.local.conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = self.local.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.getheader("Connection", "").lower() == "close" or response.will_close:
            self.local.conn.close()
            del self.local.conn
        return response.status, dict(response.getheaders()), body, elapsed


@pytest.fixture
def apis(live_server):
    """Makes an :class:`Api` per token and closes its connections at the end."""
    made: list[Api] = []

    def make(token: str) -> Api:
        made.append(Api(live_server.url, token))
        return made[-1]

    yield make
    for api in made:
        api.close()


@pytest.fixture
def served_violation(live_server, region):
    key, _ = ApiKeyFactory.with_token(region=region)
    violation = make_violation(region=region, source_key=key)
    return f"/api/v1/violations/{violation.id}"


def b_requests(api: Api, path: str) -> list[tuple[int, float]]:
    answers = []
    for _ in range(B_REQUESTS):
        status, _, _, elapsed = api.get(path)
        answers.append((status, elapsed))
        time.sleep(B_PAUSE_SECONDS)
    return answers


def test_one_keys_flood_is_refused_while_another_key_is_served(apis, region, served_violation, settings, capsys):
    settings.CAKRA_API_KEY_LIMITS = limits(rate=40, burst=40, in_flight=3)
    _, token_a = ApiKeyFactory.with_token(region=region)
    _, token_b = ApiKeyFactory.with_token(region=region)
    api_a, api_b = apis(token_a), apis(token_b)

    alone = b_requests(api_b, served_violation)

    stop = threading.Event()
    flood: list[tuple[int, dict[str, str], bytes]] = []
    lock = threading.Lock()

    def hammer() -> None:
        while not stop.is_set():
            status, headers, body, _ = api_a.get(served_violation)
            with lock:
                flood.append((status, headers, body))

    with ThreadPoolExecutor(max_workers=FLOOD_THREADS) as pool:
        for _ in range(FLOOD_THREADS):
            pool.submit(hammer)
        try:
            time.sleep(0.2)  # the flood is under way
            during = b_requests(api_b, served_violation)
        finally:
            stop.set()

    statuses = [status for status, _, _ in flood]
    ratio = statistics.median(e for _, e in during) / statistics.median(e for _, e in alone)
    with capsys.disabled():
        sys.stdout.write(
            f"\n[api quota] key B median latency: alone {statistics.median(e for _, e in alone) * 1000:.1f} ms, "
            f"during key A's flood {statistics.median(e for _, e in during) * 1000:.1f} ms (x{ratio:.2f}); "
            f"key A: {len(flood)} requests, {statuses.count(429)} refused\n"
        )

    # B: never refused, every request served.
    assert [status for status, _ in alone + during] == [200] * (2 * B_REQUESTS)
    # A: refused once over its quota, in the API's error shape, with Retry-After.
    refused = [(headers, body) for status, headers, body in flood if status == 429]
    assert refused, f"the flooding key was never refused ({len(flood)} requests)"
    headers, body = refused[0]
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert set(statuses) <= {200, 429}


def test_requests_in_flight_per_key_are_capped_and_their_slots_given_back(apis, region, served_violation, settings):
    settings.CAKRA_API_KEY_LIMITS = limits(rate=0, burst=0, in_flight=2)  # the rate limit off: only the cap
    _, token_a = ApiKeyFactory.with_token(region=region)
    api_a = apis(token_a)
    start = threading.Barrier(FLOOD_THREADS)

    def burst(_: int) -> list[tuple[int, bytes]]:
        start.wait(timeout=10)
        return [api_a.get(served_violation)[::2] for _ in range(5)]

    with ThreadPoolExecutor(max_workers=FLOOD_THREADS) as pool:
        answers = [answer for answers in pool.map(burst, range(FLOOD_THREADS)) for answer in answers]

    statuses = [status for status, _ in answers]
    assert 429 in statuses
    assert set(statuses) <= {200, 429}
    assert any(b"concurrency" in body for status, body in answers if status == 429)
    # Every slot came back: once the burst is over, the key is served again.
    assert [api_a.get(served_violation)[0] for _ in range(3)] == [200] * 3


STORES = ["database", *(["redis"] if REDIS_TEST_URL else [])]


@pytest.mark.parametrize("store_backend", STORES)
def test_a_slot_held_by_a_crashed_process_ends_with_its_lease(settings, api_key, store_backend, clock):
    if store_backend == "redis":
        settings.CACHES = {"default": {"BACKEND": REDIS_CACHE_BACKEND, "LOCATION": REDIS_TEST_URL}}
    settings.CAKRA_API_KEY_LIMITS = {**limits(rate=0, burst=0, in_flight=2), "LEASE_SECONDS": 0.2}
    key, _ = api_key
    # Two requests whose process dies before the middleware gives their slots back.
    for _ in range(2):
        api_key_request_admit(request=HttpRequest(), key=key)
    with pytest.raises(RateLimitedError):
        api_key_request_admit(request=HttpRequest(), key=key)

    clock.advance(0.15)
    with pytest.raises(RateLimitedError):  # their leases still run
        api_key_request_admit(request=HttpRequest(), key=key)
    clock.advance(0.15)  # their leases end
    served = HttpRequest()
    api_key_request_admit(request=served, key=key)
    api_key_request_release(request=served)
    for _ in range(2):
        api_key_request_admit(request=HttpRequest(), key=key)
    with pytest.raises(RateLimitedError):
        api_key_request_admit(request=HttpRequest(), key=key)
