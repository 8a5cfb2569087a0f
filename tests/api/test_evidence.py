"""Evidence: intake inspection and the shown derivative (decoded, upright, bounded, no metadata)."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from cakra.audit.models import AuditEvent
from cakra.enforcement import storage
from cakra.enforcement.evidence import (
    EvidenceDimensionsError,
    EvidenceError,
    EvidenceIntegrityError,
    EvidenceTooLargeError,
    EvidenceUnsupportedTypeError,
    evidence_derive,
    evidence_inspect,
    evidence_orphans_sweep,
)
from cakra.enforcement.models import Evidence, Violation
from cakra.enforcement.storage import evidence_store_originals_rollback_unsafe
from cakra.enforcement.tasks import (
    EVIDENCE_QUEUE,
    evidence_derive_sweep_task,
    evidence_derive_task,
    evidence_orphans_sweep_task,
)
from tests.api.helpers import evidence_files, jpeg_bytes, payload, png_bomb, post


def _received(client, token, images, capture_id="CAP-1"):
    response = post(client, token, payload(images=images, capture_id=capture_id))
    assert response.status_code == 201, response.content
    return list(Evidence.objects.filter(violation_id=response.json()["id"]).order_by("position"))


def _derivative_image(evidence):
    evidence.refresh_from_db()
    with evidence.derivative.open("rb") as handle:
        return Image.open(io.BytesIO(handle.read()))


def test_inspection_reads_dimensions_and_type_without_trusting_names():
    inspected = evidence_inspect(content=jpeg_bytes(size=(800, 600)), field="f")
    assert (inspected.content_type, inspected.extension, inspected.width, inspected.height) == (
        "image/jpeg",
        "jpg",
        800,
        600,
    )


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (png_bomb(20000), EvidenceDimensionsError),
        (b"GIF89a" + b"\x00" * 50, EvidenceUnsupportedTypeError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, EvidenceError),
    ],
    ids=["bomb", "gif", "png-garbage"],
)
def test_inspection_refuses_with_the_field_named(content, error):
    with pytest.raises(error) as raised:
        evidence_inspect(content=content, field="evidence[3].content_base64")
    assert raised.value.field == "evidence[3].content_base64"


def test_size_cap_is_checked_before_parsing(settings):
    settings.CAKRA_EVIDENCE_MAX_BYTES = 100
    with pytest.raises(EvidenceTooLargeError):
        evidence_inspect(content=b"<html>" * 100, field="f")


def test_derivative_is_upright_bounded_and_free_of_metadata(client, api_key, vehicle):
    _, token = api_key
    # EXIF orientation 6: the camera stored the picture rotated; 2400x1200 is over the bound.
    (evidence,) = _received(
        client, token, [("vehicle", jpeg_bytes(size=(2400, 1200), with_metadata=True, orientation=6))]
    )

    assert evidence_derive(evidence_id=evidence.id) is True

    shown = _derivative_image(evidence)
    assert shown.size == (800, 1600)  # turned upright, long side bounded to 1600
    assert shown.format == "JPEG"
    assert not shown.getexif()
    assert "icc_profile" not in shown.info
    assert "comment" not in shown.info
    event = AuditEvent.objects.get(action="evidence.derived", object_id=str(evidence.id))
    assert event.data["derivative_sha256"] == evidence.derivative_sha256
    assert event.data["original_sha256"] == evidence.original_sha256


def test_png_with_transparency_becomes_an_rgb_jpeg(client, api_key, vehicle):
    _, token = api_key
    out = io.BytesIO()
    Image.new("RGBA", (300, 200), (10, 200, 10, 128)).save(out, "PNG")
    (evidence,) = _received(client, token, [("plate", out.getvalue())])

    evidence_derive(evidence_id=evidence.id)

    shown = _derivative_image(evidence)
    assert (shown.format, shown.mode, shown.size) == ("JPEG", "RGB", (300, 200))


def test_deriving_twice_changes_nothing_and_leaves_no_stray_file(client, api_key, vehicle):
    _, token = api_key
    (evidence,) = _received(client, token, [("vehicle", jpeg_bytes())])
    assert evidence_derive(evidence_id=evidence.id) is True
    evidence.refresh_from_db()
    first = (evidence.derivative.name, evidence.derivative_sha256, evidence.derived_at)
    files = evidence_files()

    assert evidence_derive(evidence_id=evidence.id) is False
    evidence_derive_task.apply(args=(str(evidence.id),)).get()

    evidence.refresh_from_db()
    assert (evidence.derivative.name, evidence.derivative_sha256, evidence.derived_at) == first
    assert evidence_files() == files
    assert AuditEvent.objects.filter(action="evidence.derived", object_id=str(evidence.id)).count() == 1


def test_an_altered_original_is_never_turned_into_a_derivative(client, api_key, vehicle):
    _, token = api_key
    (evidence,) = _received(client, token, [("vehicle", jpeg_bytes())])
    storage = evidence.original.storage
    name = evidence.original.name
    storage.delete(name)
    storage.save(name, ContentFile(jpeg_bytes(colour=(0, 0, 0))))

    with pytest.raises(EvidenceIntegrityError):
        evidence_derive(evidence_id=evidence.id)

    evidence.refresh_from_db()
    assert evidence.derived_at is None
    assert not evidence.derivative


def test_undecodable_original_fails_the_task_permanently_without_retry(client, api_key, vehicle):
    """Passes the cheap intake checks, fails the real decode: logged, not retried, nothing shown."""
    _, token = api_key
    damaged = bytearray(jpeg_bytes(size=(640, 480)))
    scan = damaged.index(b"\xff\xda")
    # The start-of-scan header names a colour component the frame does not
    # have: intake's header parse stops before it, the decoder refuses it.
    damaged[scan + 5] = 0x09
    broken = bytes(damaged)
    (evidence,) = _received(client, token, [("vehicle", broken)])

    result = evidence_derive_task.apply(args=(str(evidence.id),))

    assert result.successful()
    evidence.refresh_from_db()
    assert evidence.derived_at is None


def test_unknown_evidence_id_is_ignored(db):
    assert evidence_derive(evidence_id="00000000-0000-0000-0000-000000000000") is False


def test_sweeper_re_enqueues_only_old_underived_evidence(client, api_key, vehicle, monkeypatch):

    _, token = api_key
    (lost,) = _received(client, token, [("vehicle", jpeg_bytes())], capture_id="CAP-LOST")
    Violation.objects.filter(pk=lost.violation_id).update(received_at=timezone.now() - timedelta(hours=1))
    (fresh,) = _received(client, token, [("vehicle", jpeg_bytes())], capture_id="CAP-FRESH")
    sent = []
    monkeypatch.setattr(evidence_derive_task, "apply_async", lambda args, queue: sent.append((args, queue)))

    assert evidence_derive_sweep_task.apply().get() == 1
    assert sent == [((str(lost.id),), EVIDENCE_QUEUE)]
    assert fresh.derived_at is None


def _stored(names):

    return [(settings.EVIDENCE_ROOT / name).read_bytes() for name in names]


def test_originals_are_stored_byte_for_byte_whatever_their_size(db):
    """Direct writes pad to the disk's block: the file is cut back to exactly the bytes received."""

    contents = [b"\xff\xd8\xff" + bytes(range(256)) * size for size in (0, 1, 16, 4096 // 256 * 3)] + [b"x"]
    files = [(f"tests/sizes/{n}.jpg", content) for n, content in enumerate(contents)]

    names = evidence_store_originals_rollback_unsafe(files=files)

    assert names == [name for name, _ in files]
    assert _stored(names) == contents


@pytest.mark.parametrize("refusal", ["no_direct_io", "other_alignment"])
def test_originals_are_written_where_direct_io_is_refused(db, monkeypatch, refusal):
    """A file system without direct I/O (tmpfs, some network mounts) or with another alignment: ordinary writes."""

    if refusal == "no_direct_io":  # what tmpfs answers
        real_fcntl = fcntl.fcntl

        def refuse_direct(descriptor, command, arg=0):
            if command == fcntl.F_SETFL and arg & storage._O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_fcntl(descriptor, command, arg)

        monkeypatch.setattr(fcntl, "fcntl", refuse_direct)
    else:
        real_write = os.write

        def aligned_elsewhere(descriptor, data):
            if fcntl.fcntl(descriptor, fcntl.F_GETFL) & storage._O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_write(descriptor, data)

        monkeypatch.setattr(os, "write", aligned_elsewhere)
    contents = [jpeg_bytes(), b"\xff\xd8\xff" + b"z" * 5000]

    names = storage.evidence_store_originals_rollback_unsafe(
        files=[(f"tests/{refusal}/{n}.jpg", content) for n, content in enumerate(contents)]
    )

    assert _stored(names) == contents


def test_an_existing_file_is_never_overwritten(db):

    (name,) = evidence_store_originals_rollback_unsafe(files=[("tests/taken.jpg", b"first")])
    with pytest.raises(FileExistsError):
        evidence_store_originals_rollback_unsafe(files=[("tests/other.jpg", b"x"), (name, b"second")])
    assert _stored([name]) == [b"first"]
    assert not any(path.name == "other.jpg" for path in evidence_files())


# --- Orphaned files (a crash between writing and committing) -----------------------


ORPHAN_ID = "0c0ffee0-0000-4000-8000-00000000000"  # + one digit


def _orphan(name, *, age_hours):
    """A file in the evidence storage that no row references, ``age_hours`` old."""

    path = settings.EVIDENCE_ROOT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes())
    moment = time.time() - age_hours * 3600
    os.utime(path, (moment, moment))
    return path


def test_the_orphan_sweep_removes_unreferenced_old_files_and_nothing_else(client, api_key, vehicle, region):

    _, token = api_key
    (kept,) = _received(client, token, [("vehicle", jpeg_bytes())])
    evidence_derive(evidence_id=kept.id)
    kept.refresh_from_db()
    for name in (kept.original.name, kept.derivative.name):  # referenced, however old
        path = kept.original.storage.path(name)
        os.utime(path, (0, 0))
    today = f"{timezone.localtime():%Y/%m/%d}"
    yesterday = f"{timezone.localtime() - timedelta(days=1):%Y/%m/%d}"
    crashed = _orphan(f"original/{region.pk}/{today}/{ORPHAN_ID}1.jpg", age_hours=2)
    crashed_derive = _orphan(f"derivative/{region.pk}/{yesterday}/{ORPHAN_ID}2.jpg", age_hours=30)
    in_flight = _orphan(f"original/{region.pk}/{today}/{ORPHAN_ID}3.jpg", age_hours=0.1)

    assert evidence_orphans_sweep() == 2

    assert not crashed.exists()
    assert not crashed_derive.exists()
    assert in_flight.exists()  # younger than any open transaction could be: left alone
    assert kept.original.storage.exists(kept.original.name)
    assert kept.original.storage.exists(kept.derivative.name)
    events = AuditEvent.objects.filter(action="evidence.orphans_removed").order_by("seq")
    assert sorted(name for event in events for name in event.data["files"]) == [
        f"{ORPHAN_ID}1.jpg",
        f"{ORPHAN_ID}2.jpg",
    ]
    assert evidence_orphans_sweep() == 0  # idempotent


def test_the_orphan_sweep_is_scheduled(settings):

    entries = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]
    assert evidence_orphans_sweep_task.name in entries
