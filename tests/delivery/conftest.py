"""Fixtures for the delivery tests: a real notice with its email delivery, and
the real SMTP sink on free loopback ports with settings pointing at it."""

from __future__ import annotations

import socket

import pytest

from cakra.enforcement.models import Article, Violation
from cakra.enforcement.services import violation_validate_pre_validated
from cakra.simulators.smtp_sink import MailSink


@pytest.fixture
def mail_sink(tmp_path, settings):
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
    ) as sink:
        settings.CAKRA_EMAIL = {**settings.CAKRA_EMAIL, "HOST": "127.0.0.1", "PORT": sink.smtp_port, "SECURITY": "none"}
        yield sink


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_down(settings, closed_port):
    settings.CAKRA_EMAIL = {**settings.CAKRA_EMAIL, "HOST": "127.0.0.1", "PORT": closed_port, "SECURITY": "none"}


@pytest.fixture
def notice(vehicle, pre_validated_key, region):
    """Issued through the pre-validated intake path (the officer path differs
    only in who validates, and hashing an officer's password costs a third of
    a second per test)."""
    key, _token = pre_validated_key
    violation = Violation.objects.create(
        region=region,
        capture_id="CAP-EMAIL-1",
        payload_hash="0" * 64,
        camera_id="CAM-7",
        captured_at="2026-11-28T08:05:00+07:00",
        location="Jl. Jend. Sudirman (depan FX Sudirman), Jakarta Pusat",
        plate=vehicle.plate,
        plate_compact=vehicle.plate_compact,
        article=Article.objects.get(code="287(2)"),
        vehicle=vehicle,
        source_key=key,
    )
    return violation_validate_pre_validated(violation=violation)


@pytest.fixture
def delivery(notice):
    return notice.deliveries.get(channel="email")
