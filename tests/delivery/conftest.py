"""Fixtures for the delivery tests: a real notice with its email delivery, and
the real SMTP sink on free loopback ports with settings pointing at it."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from cakra.delivery.channels.health import provider_health_reset_process
from cakra.delivery.channels.store import REDIS_CACHE_BACKEND
from cakra.simulators.smtp import MailSink
from tests.factories import make_notice


@pytest.fixture
def email_relay(settings):
    """Change the default email provider's OPTIONS for one test:
    ``email_relay(PORT=port, SECURITY="none")``. (The relay's settings live in
    ``CAKRA_PROVIDERS["smtp"]["OPTIONS"]``; ``CAKRA_EMAIL`` only names the
    sender domain's DKIM key.)"""

    def point(**options):
        providers = dict(settings.CAKRA_PROVIDERS)
        entry = providers["smtp"]
        providers["smtp"] = {**entry, "OPTIONS": {**entry["OPTIONS"], **options}}
        settings.CAKRA_PROVIDERS = providers

    return point


@pytest.fixture
def mail_sink(tmp_path, settings, email_relay):
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
    ) as sink:
        email_relay(HOST="127.0.0.1", PORT=sink.smtp_port, SECURITY="none")
        yield sink


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_down(email_relay, closed_port):
    email_relay(HOST="127.0.0.1", PORT=closed_port, SECURITY="none")


@pytest.fixture
def notice(vehicle, pre_validated_key, region):
    """Issued through the pre-validated intake path (the officer path differs
    only in who validates, and hashing an officer's password costs a third of
    a second per test)."""
    key, _token = pre_validated_key
    return make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id="CAP-EMAIL-1",
        camera_id="CAM-7",
        location="Jl. Jend. Sudirman (depan FX Sudirman), Jakarta Pusat",
    )


@pytest.fixture
def delivery(notice):
    return notice.deliveries.get(channel="email")


# --- Providers, health and rate limits (tests/delivery/test_providers.py, test_ratelimit.py) ---
# The Redis store runs too when CAKRA_TEST_REDIS_URL names a Redis database
# (make test-postgres sets it); the database cache store always runs.
REDIS_TEST_URL = os.environ.get("CAKRA_TEST_REDIS_URL", "")
STORE_BACKENDS = ["database", *(["redis"] if REDIS_TEST_URL else [])]


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request, settings):
    """The test runs once per shared store the deployment may use."""
    if request.param == "redis":
        settings.CACHES = {"default": {"BACKEND": REDIS_CACHE_BACKEND, "LOCATION": REDIS_TEST_URL}}
    return request.param


@pytest.fixture
def provider_state(settings):
    """Health synced on every call, and no counts left over from other tests
    in this process (the store itself is per test: the database cache rolls
    back, and Redis tests use provider names of their own)."""
    settings.CAKRA_PROVIDER_HEALTH = {**settings.CAKRA_PROVIDER_HEALTH, "SYNC_SECONDS": 0}
    provider_health_reset_process()
    yield
    provider_health_reset_process()


@pytest.fixture
def unique_name():
    """Makes provider names and sender identities no other test (nor an
    earlier run against the same Redis) uses: ``unique_name("smtp")``."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"
