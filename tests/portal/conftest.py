"""Portal fixtures: issued notices with evidence images on the private storage."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image

from cakra.api.intake import EvidenceSubmission
from cakra.enforcement.evidence import evidence_derive
from cakra.enforcement.models import Evidence, Notice, Violation, evidence_storage
from cakra.security.sessions import PortalSessionStore
from tests.factories import VehicleFactory, capture_jpeg, make_notice

CSRF_TOKEN_RE = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"')


def strip_csrf(body: bytes) -> bytes:
    return CSRF_TOKEN_RE.sub(b'name="csrfmiddlewaretoken" value=""', body)


def jpeg_bytes(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def add_evidence(violation: Violation, *, position: int, derived: bool, colour=(200, 30, 30)) -> Evidence:
    """An evidence row with its original stored; ``derived`` runs the real
    derivative service (what the worker does off the request path)."""
    original = jpeg_bytes(colour, (80, 60))
    evidence = Evidence.objects.create(
        violation=violation,
        position=position,
        original=evidence_storage().save(f"tests/{uuid.uuid4()}.jpg", ContentFile(original)),
        original_sha256=hashlib.sha256(original).hexdigest(),
        content_type="image/jpeg",
        size_bytes=len(original),
        width=80,
        height=60,
    )
    if derived:
        assert evidence_derive(evidence_id=evidence.id)
        evidence.refresh_from_db()
    return evidence


@dataclass
class IssuedNotice:
    notice: Notice
    evidence: list[Evidence]
    derivative: bytes


def issue_notice(*, vehicle, region, capture_id: str, derived: bool = True, colour=(200, 30, 30)):
    """A notice issued through intake with one photo of ``colour``; ``derived`` runs the worker's
    derivative service, as a first view would have asked it to."""
    notice = make_notice(
        vehicle=vehicle,
        region=region,
        capture_id=capture_id,
        camera_id="CAM-SUDIRMAN-01",
        evidence=(EvidenceSubmission(kind="vehicle", content=capture_jpeg(colour)),),
    )
    evidence = list(notice.violation.evidence.order_by("position"))
    derivative = b""
    if derived:
        assert evidence_derive(evidence_id=evidence[0].id)
        evidence[0].refresh_from_db()
        with evidence[0].derivative.open("rb") as handle:
            derivative = handle.read()
    return IssuedNotice(notice=notice, evidence=evidence, derivative=derivative)


@pytest.fixture(autouse=True, scope="session")
def _static_root_exists():
    """WhiteNoise warns (an error here) when STATIC_ROOT is missing; the
    embedded default serves from the apps, so an empty directory is enough."""

    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture
def issued(vehicle, officer, region):
    """Notice A: vehicle B 1234 XYZ, one derived evidence photo."""
    return issue_notice(vehicle=vehicle, region=region, capture_id="CAP-A")


@pytest.fixture
def other_issued(officer, region):
    """Notice B: another vehicle and owner, its own photo."""
    other_vehicle = VehicleFactory(plate="B 9876 QRS")
    return issue_notice(vehicle=other_vehicle, region=region, capture_id="CAP-B", colour=(30, 30, 200))


@pytest.fixture
def long_windows(settings):
    """Rate-limit windows far longer than a test, so no window boundary falls
    inside one (fixed windows reset at the boundary); counts stay as configured."""
    settings.CAKRA_PORTAL_RATE_LIMITS = {
        name: (count, 10**7) for name, (count, _seconds) in settings.CAKRA_PORTAL_RATE_LIMITS.items()
    }
    return settings.CAKRA_PORTAL_RATE_LIMITS


def portal_session(client) -> PortalSessionStore:
    """The browser's portal session, as the server holds it (the test
    client's ``session`` is the back office's, SESSION_ENGINE's)."""
    cookie = client.cookies.get(settings.CAKRA_PORTAL_SESSION_COOKIE_NAME)
    return PortalSessionStore(cookie.value if cookie is not None else None)
