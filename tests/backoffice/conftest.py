"""Fixtures for the officer back office: signed-in clients, violations, evidence."""

from __future__ import annotations

import io
import itertools
import time
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.test import Client, RequestFactory
from django.utils import timezone
from django_otp.oath import TOTP
from PIL import Image

from cakra.backoffice.access import officer_session_start
from cakra.backoffice.models import Officer, OfficerTOTPDevice
from cakra.backoffice.services import officer_totp_device_create
from cakra.enforcement.models import Article, Evidence, Violation
from cakra.security.sessions import SessionStore
from tests.factories import OfficerFactory

_capture_ids = itertools.count(1)


def totp_code(device: OfficerTOTPDevice, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or ``steps_ahead`` steps later,
    within the device's tolerance), computed from the device's key."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():06d}"


def english_client(**kwargs: Any) -> Client:
    # Assertions read English source strings: they hold whether or not the
    # Indonesian catalogue has been compiled.
    return Client(HTTP_ACCEPT_LANGUAGE="en", **kwargs)


@pytest.fixture
def client():
    return english_client()


@pytest.fixture
def csrf_client():
    return english_client(enforce_csrf_checks=True)


@pytest.fixture
def otp_device(officer):
    return officer_totp_device_create(officer=officer, name="test", confirmed=True)


def sign_in(client: Client, officer: Officer, device: OfficerTOTPDevice) -> Client:
    """A complete officer session (password and TOTP verified), made by the
    same function the sign-in's last step calls (so it carries the sign-in,
    last-seen and re-authentication times the back office checks), without
    the slow password hash; the browser gets the back office's cookie."""
    request = RequestFactory().post("/backoffice/login/otp/")
    request.session = SessionStore()
    request.user = AnonymousUser()
    officer_session_start(request, officer=officer, device=device)
    request.session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = request.session.session_key or ""
    return client


@pytest.fixture
def officer_client(client, officer, otp_device):
    return sign_in(client, officer, otp_device)


@pytest.fixture
def make_officer(region):
    def make(*, role: str = Officer.Role.VALIDATOR, officer_region=None, client: Client | None = None):
        officer: Officer = OfficerFactory.create(region=officer_region or region, role=role)
        device = officer_totp_device_create(officer=officer, name="test", confirmed=True)
        return officer, sign_in(client or english_client(), officer, device)

    return make


@pytest.fixture
def make_violation(region):
    def make(*, vehicle=None, violation_region=None, article_code: str = "287(2)", **overrides) -> Violation:
        values = {
            "region": violation_region or region,
            "capture_id": f"CAP-{next(_capture_ids)}",
            "payload_hash": "0" * 64,
            "camera_id": "CAM-SUDIRMAN-01",
            "captured_at": timezone.now() - timedelta(hours=2),
            "location": "Jl. Jend. Sudirman, Jakarta Pusat",
            "plate": vehicle.plate if vehicle else "B 9999 ZZZ",
            "plate_compact": vehicle.plate_compact if vehicle else "B9999ZZZ",
            "article": Article.objects.get(code=article_code),
            "vehicle": vehicle,
        }
        values.update(overrides)
        return Violation.objects.create(**values)

    return make


def jpeg_bytes(colour: str = "navy") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture
def make_evidence():
    def make(violation: Violation, *, derived: bool = True, position: int = 1) -> Evidence:
        storage = storages["evidence"]
        original = jpeg_bytes("red")
        original_name = storage.save(f"{violation.id}/{position}-original.jpg", ContentFile(original))
        derivative_name = ""
        if derived:
            derivative_name = storage.save(f"{violation.id}/{position}-derivative.jpg", ContentFile(jpeg_bytes()))
        return Evidence.objects.create(
            violation=violation,
            position=position,
            original=original_name,
            original_sha256="a" * 64,
            content_type="image/jpeg",
            size_bytes=len(original),
            width=64,
            height=48,
            derivative=derivative_name,
            derivative_sha256="b" * 64 if derived else "",
            derived_at=timezone.now() if derived else None,
        )

    return make
