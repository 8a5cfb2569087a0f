"""POST /api/v1/violations: first receipt, replay, conflict, pre-validated keys."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

from django.conf import settings
from PIL import Image

from cakra.api import intake
from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery
from cakra.enforcement import storage
from cakra.enforcement.models import Evidence, Notice, Violation
from tests.api.helpers import (
    CAMERA_NOTE,
    StoreSnapshot,
    b64,
    evidence_files,
    get,
    image_bytes,
    jpeg_bytes,
    payload,
    post,
)
from tests.factories import ApiKeyFactory


def test_first_receipt_stores_violation_and_exact_evidence_bytes(
    client, api_key, vehicle, celery_eager, django_capture_on_commit_callbacks
):
    key, token = api_key
    vehicle_jpeg = jpeg_bytes(with_metadata=True)
    plate_png = image_bytes("PNG", size=(320, 80))
    body = payload(images=[("vehicle", vehicle_jpeg), ("plate", plate_png)])

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(client, token, body)

    assert response.status_code == 201, response.content
    answer = response.json()
    violation = Violation.objects.get(pk=answer["id"])
    assert answer["status"] == "received"
    assert answer["capture_id"] == body["capture_id"]
    assert answer["plate"] == "B 1234 XYZ"
    assert answer["article"] == "287(1)"
    assert violation.vehicle_id == vehicle.id
    assert violation.source_key_id == key.id
    assert str(violation.latitude) == "-6.224524"
    # One derive task per image, enqueued after commit.
    assert len(callbacks) == 2

    first, second = Evidence.objects.filter(violation=violation).order_by("position")
    for row, sent, content_type in ((first, vehicle_jpeg, "image/jpeg"), (second, plate_png, "image/png")):
        with row.original.open("rb") as handle:
            stored = handle.read()
        assert stored == sent  # byte for byte, metadata and all (chain of custody)
        assert row.original_sha256 == hashlib.sha256(sent).hexdigest()
        assert row.content_type == content_type
        assert row.size_bytes == len(sent)
    assert (first.kind, first.width, first.height) == ("vehicle", 640, 480)
    assert (second.kind, second.width, second.height) == ("plate", 320, 80)

    # The derive tasks ran (eagerly, as a worker would): a clean JPEG each.
    first.refresh_from_db()
    assert first.derived_at is not None
    with first.derivative.open("rb") as handle:
        derived = handle.read()
    assert first.derivative_sha256 == hashlib.sha256(derived).hexdigest()
    for marker in (b"Exif", b"ICC_PROFILE", CAMERA_NOTE, b"ETLE Camera Co"):
        assert marker not in derived
    shown = Image.open(io.BytesIO(derived))
    assert shown.format == "JPEG"
    assert shown.mode == "RGB"
    assert not shown.getexif()
    assert not {"exif", "icc_profile", "comment", "xmp"} & set(shown.info)

    event = AuditEvent.objects.get(action="violation.received", object_id=str(violation.id))
    assert event.actor_type == "api_key"
    assert event.data["evidence_sha256"] == [first.original_sha256, second.original_sha256]


def test_replay_with_same_content_answers_200_with_the_same_violation(client, api_key, vehicle):
    _, token = api_key
    body = payload()
    created = post(client, token, body)
    assert created.status_code == 201
    store = StoreSnapshot()

    replay = post(client, token, body)
    # Plate spelling and the offset of the timestamp are not "different content".
    respelled = dict(body, plate="b1234xyz")
    replay_respelled = post(client, token, respelled)

    assert replay.status_code == 200
    assert replay_respelled.status_code == 200
    assert replay.json() == created.json() == replay_respelled.json()
    store.assert_unchanged()
    assert AuditEvent.objects.filter(action="violation.received").count() == 1


def test_same_capture_id_with_different_content_is_a_conflict(client, api_key, vehicle):
    _, token = api_key
    body = payload()
    assert post(client, token, body).status_code == 201
    store = StoreSnapshot()

    changed_location = post(client, token, dict(body, location="Jl. M.H. Thamrin"))
    changed_image = post(client, token, payload(images=[("vehicle", jpeg_bytes(colour=(1, 2, 3)))]))

    for response in (changed_location, changed_image):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert response.json()["error"]["field"] == "capture_id"
    store.assert_unchanged()


def test_capture_ids_are_scoped_per_region(client, api_key, other_region, vehicle):
    _, token = api_key
    _, other_token = ApiKeyFactory.with_token(region=other_region)
    body = payload()

    first = post(client, token, body)
    second = post(client, other_token, body)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


def test_unknown_plate_is_received_without_registry_match(client, api_key, db):
    _, token = api_key
    response = post(client, token, payload(plate="B 9 ZZ"))
    assert response.status_code == 201
    assert Violation.objects.get(pk=response.json()["id"]).vehicle_id is None


def test_pre_validated_key_issues_notice_and_plans_delivery(
    client, pre_validated_key, vehicle, django_capture_on_commit_callbacks
):
    _, token = pre_validated_key
    # Callbacks captured, not run: sending is the delivery slice's business.
    with django_capture_on_commit_callbacks(execute=False):
        response = post(client, token, payload())

    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["status"] == "received"  # the notice stays internal: no registry oracle
    notice = Notice.objects.get(violation_id=answer["id"])
    assert notice.fine_amount == 500000
    first_step = Delivery.objects.get(notice=notice, step=1)
    assert first_step.status == Delivery.Status.PENDING

    status = get(client, token, f"notices/{notice.number}")
    assert status.status_code == 200
    assert status.json()["deliveries"][0]["status"] == "pending"
    assert Violation.objects.get(pk=answer["id"]).pre_validated is True


def test_pre_validated_key_without_registry_match_waits_for_an_officer(client, pre_validated_key, db):
    _, token = pre_validated_key
    response = post(client, token, payload(plate="B 9 ZZ"))
    assert response.status_code == 201
    assert response.json()["status"] == "received"
    assert not Notice.objects.exists()


def test_a_race_lost_on_the_unique_constraint_answers_as_replay_and_removes_its_files(
    client, api_key, vehicle, monkeypatch
):
    """Two senders of one capture: the constraint decides; the loser leaves nothing behind."""

    _, token = api_key
    body = payload()
    winner = post(client, token, body)
    store = StoreSnapshot()
    real_replay = intake._replay
    calls = []

    def replay_not_yet_committed(**kwargs):
        # The first look happens before the concurrent request commits.
        calls.append(kwargs)
        return None if len(calls) == 1 else real_replay(**kwargs)

    monkeypatch.setattr(intake, "_replay", replay_not_yet_committed)
    loser = post(client, token, body)

    assert loser.status_code == 200
    assert loser.json()["id"] == winner.json()["id"]
    assert len(calls) == 2
    store.assert_unchanged()


def test_a_failing_transaction_removes_the_files_it_wrote(client, api_key, vehicle, monkeypatch):

    _, token = api_key
    store = StoreSnapshot()

    def audit_down(**kwargs):
        raise RuntimeError("audit chain unavailable")

    monkeypatch.setattr(intake, "audit_event_record", audit_down)
    response = post(client, token, payload(images=[("vehicle", jpeg_bytes()), ("context", jpeg_bytes())]))

    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    store.assert_unchanged()


def test_evidence_is_private_and_never_under_a_served_path(client, api_key, vehicle):
    _, token = api_key
    response = post(client, token, payload())
    evidence = Evidence.objects.get(violation_id=response.json()["id"])
    assert str(evidence.original.name).startswith("original/")
    path = Path(evidence.original.path)
    assert path in evidence_files()
    assert Path(settings.EVIDENCE_ROOT) != Path(settings.STATIC_ROOT)
    # Readable by the service user only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_base64_framing_does_not_matter_only_bytes_do(client, api_key, vehicle):
    _, token = api_key
    content = jpeg_bytes()
    body = payload(images=[("vehicle", content)])
    assert body["evidence"][0]["content_base64"] == b64(content)
    assert post(client, token, body).status_code == 201


def test_intake_query_count_is_bounded(client, api_key, vehicle, django_assert_max_num_queries):
    """The hot path: 300 captures a second must not grow queries with the number of images."""
    _, token = api_key
    images = [("vehicle", jpeg_bytes()), ("plate", jpeg_bytes()), ("context", jpeg_bytes()), ("context", jpeg_bytes())]
    post(client, token, payload(capture_id="WARM-UP"))  # first use records last_used_at
    # rate-limit peek, key, the key's quota (savepoint pair, bucket update, lease insert, lease delete),
    # article, replay check, vehicle, 2 inserts, audit chain (head update + insert, + a locked read of
    # the head when stale), re-read (+ savepoint pair)
    with django_assert_max_num_queries(18):
        assert post(client, token, payload(images=images)).status_code == 201


def test_a_failing_file_write_removes_the_files_already_written(client, api_key, vehicle, monkeypatch):

    _, token = api_key
    real_write = storage._write_all
    writes = []

    def disk_full_on_second_file(descriptor, content):
        writes.append(descriptor)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        real_write(descriptor, content)

    store = StoreSnapshot()
    monkeypatch.setattr(storage, "_write_all", disk_full_on_second_file)
    response = post(client, token, payload(images=[("vehicle", jpeg_bytes()), ("plate", jpeg_bytes())]))

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert len(writes) == 2
    store.assert_unchanged()


def test_a_failing_flush_to_disk_stores_nothing(client, api_key, vehicle, monkeypatch):
    """The originals must be on disk before their rows commit: a flush that fails is a failed intake."""

    _, token = api_key
    flushed = []

    def io_error(descriptor):
        flushed.append(descriptor)
        raise OSError(5, "Input/output error")

    store = StoreSnapshot()
    monkeypatch.setattr(storage, "_fdatasync", io_error)
    response = post(client, token, payload(images=[("vehicle", jpeg_bytes()), ("plate", jpeg_bytes())]))

    assert response.status_code == 500
    assert flushed
    store.assert_unchanged()


def test_stored_originals_are_flushed_with_their_directory(client, api_key, vehicle, monkeypatch):
    """Each original's data and its directory entry are flushed before the answer (crash safety of evidence)."""

    _, token = api_key
    synced_files: list[int] = []
    synced_directories: list[str] = []
    real_fdatasync, real_directory_sync = storage._fdatasync, storage._directory_sync

    def fdatasync(descriptor):
        synced_files.append(os.fstat(descriptor).st_ino)
        real_fdatasync(descriptor)

    def directory_sync(directory):
        synced_directories.append(str(directory))
        real_directory_sync(directory)

    monkeypatch.setattr(storage, "_fdatasync", fdatasync)
    monkeypatch.setattr(storage, "_directory_sync", directory_sync)
    response = post(client, token, payload(images=[("vehicle", jpeg_bytes()), ("plate", jpeg_bytes())]))

    assert response.status_code == 201
    stored = Evidence.objects.filter(violation_id=response.json()["id"])
    paths = [Path(row.original.path) for row in stored]
    assert sorted(synced_files) == sorted(path.stat().st_ino for path in paths)
    assert {str(path.parent) for path in paths} <= set(synced_directories)
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in paths)
    assert all(
        hashlib.sha256(path.read_bytes()).hexdigest() == row.original_sha256
        for path, row in zip(paths, stored, strict=True)
    )
