"""Expensive work inside public requests: images are decoded by workers only,
and an image that does not decode is tried a bounded number of times."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image, ImageFile

from cakra.audit.models import AuditEvent
from cakra.enforcement.evidence import DERIVE_MAX_ATTEMPTS
from cakra.enforcement.models import Evidence, Violation, evidence_storage
from cakra.enforcement.tasks import EVIDENCE_QUEUE, evidence_derive_sweep_task, evidence_derive_task
from tests.factories import make_violation
from tests.portal.conftest import issue_notice


@pytest.fixture
def decoder_calls(monkeypatch):
    """Counts every way Pillow is asked to read pixels or headers (a probe, the real functions still run)."""
    calls: list[str] = []
    # ImageFile.load is where every file-backed image is decoded (it calls Image.load in turn).
    for owner, name in ((Image, "open"), (ImageFile.ImageFile, "load")):
        real = getattr(owner, name)

        def probe(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, probe)
    return calls


def test_a_portal_view_of_an_underived_photo_never_decodes_it(
    client, vehicle, officer, region, decoder_calls, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(evidence_derive_task, "apply_async", lambda args, queue: queued.append((args, queue)))
    pending = issue_notice(vehicle=vehicle, region=region, capture_id="CAP-P", derived=False)
    decoder_calls.clear()

    found = client.post("/cek/", {"number": pending.notice.number, "plate": "B 1234 XYZ"})
    with django_capture_on_commit_callbacks(execute=True):
        page = client.get(found["Location"])
    photo = client.get(f"/notice/{pending.notice.id}/evidence/{pending.evidence[0].id}/")

    assert page.status_code == 200
    assert "Foto sedang diproses" in page.content.decode()
    assert photo.status_code == 404
    assert decoder_calls == []
    assert queued == [((str(pending.evidence[0].id),), EVIDENCE_QUEUE)]  # the work went to a worker instead


def _corrupt_evidence(violation: Violation) -> Evidence:
    """Passes intake's structural checks, fails the real decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="JPEG")
    damaged = bytearray(buffer.getvalue())
    scan = damaged.index(b"\xff\xda")
    damaged[scan + 5] = 0x09  # the scan names a colour component the frame does not have
    original = bytes(damaged)
    return Evidence.objects.create(
        violation=violation,
        position=1,
        original=evidence_storage().save(f"tests/{uuid.uuid4()}.jpg", ContentFile(original)),
        original_sha256=hashlib.sha256(original).hexdigest(),
        content_type="image/jpeg",
        size_bytes=len(original),
        width=64,
        height=48,
    )


def test_a_corrupt_original_is_decoded_at_most_the_allowed_times_over_repeated_sweeps(
    vehicle, officer, region, decoder_calls, monkeypatch
):

    violation = make_violation(region=region, vehicle=vehicle, capture_id="CAP-BAD", camera_id="CAM-SUDIRMAN-01")
    Violation.objects.filter(pk=violation.pk).update(received_at=timezone.now() - timedelta(hours=1))
    evidence = _corrupt_evidence(violation)
    # The sweep's queue messages run at once, in this process.
    monkeypatch.setattr(
        evidence_derive_task,
        "apply_async",
        lambda args, queue: evidence_derive_task.apply(args=args).get() if queue == EVIDENCE_QUEUE else None,
    )
    decoder_calls.clear()

    for _ in range(DERIVE_MAX_ATTEMPTS + 4):
        evidence_derive_sweep_task.apply().get()

    evidence.refresh_from_db()
    assert evidence.derive_attempts == DERIVE_MAX_ATTEMPTS
    assert evidence.derive_failed_at is not None
    assert evidence.derive_last_error == "EvidenceDecodeError"
    assert evidence.derived_at is None
    assert decoder_calls.count("load") == DERIVE_MAX_ATTEMPTS
    assert AuditEvent.objects.filter(action="evidence.derive_failed", object_id=str(evidence.id)).count() == 1
    assert evidence_derive_sweep_task.apply().get() == 0  # no longer picked up at all
