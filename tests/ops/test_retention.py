"""Retention: personal data leaves rows and disk on schedule, statistics stay, every batch is audited."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db.models import Count, Sum
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.backoffice.selectors import violation_queue
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.enforcement.evidence import evidence_derive
from cakra.enforcement.models import Evidence, Notice, Violation, evidence_storage
from cakra.ops.retention import retention_purge
from cakra.ops.tasks import retention_purge_task
from tests.api.helpers import jpeg_bytes
from tests.factories import VehicleFactory, make_notice, make_violation

NOTICE_DAYS = 730
REJECTED_DAYS = 90
UNDECIDED_DAYS = 365


def _with_evidence(violation: Violation) -> Violation:
    storage = evidence_storage()
    original = storage.save(f"test/{violation.pk}-original.jpg", ContentFile(jpeg_bytes(size=(32, 24))))
    derivative = storage.save(f"test/{violation.pk}-derivative.jpg", ContentFile(jpeg_bytes(size=(16, 12))))
    Evidence.objects.create(
        violation=violation,
        position=0,
        original=original,
        original_sha256="a" * 64,
        content_type="image/jpeg",
        size_bytes=1,
        width=32,
        height=24,
        derivative=derivative,
        derivative_sha256="b" * 64,
        derived_at=timezone.now(),
    )
    return violation


@pytest.fixture
def cases(region, vehicle, pre_validated_key):
    """Two notices (one with a receipt), one rejected capture and one waiting for an officer."""
    key, _ = pre_validated_key
    notices = []
    for n, plate_vehicle in enumerate((vehicle, VehicleFactory(plate="B 77 QQ"))):
        notice = make_notice(vehicle=plate_vehicle, api_key=key, capture_id=f"RET-{n}")
        for evidence in notice.violation.evidence.all():  # what a first view of the photo asks a worker for
            assert evidence_derive(evidence_id=evidence.pk)
        notices.append(notice)
    delivery = Delivery.objects.filter(notice=notices[0]).first()
    assert delivery is not None
    DeliveryReceipt.objects.create(
        provider="smtp",
        event_id="evt-1",
        delivery=delivery,
        event="bounced",
        outcome="applied",
        status_after=delivery.status,
        occurred_at=timezone.now(),
        received_at=timezone.now(),
        detail="550 mailbox of budi unavailable",
    )
    rejected = _with_evidence(
        make_violation(
            region=region,
            capture_id="RET-REJECTED",
            status=Violation.Status.REJECTED,
            decided_at=timezone.now(),
            rejection_reason="Plat tidak terbaca, mobil milik tetangga",
        )
    )
    waiting = _with_evidence(make_violation(region=region, vehicle=vehicle, capture_id="RET-WAITING"))
    return notices, rejected, waiting


def _statistics():
    return (
        list(Violation.objects.values("region__code", "article__code", "status").annotate(n=Count("id")).order_by()),
        list(
            Notice.objects.values("region__code", "article__code", "issued_at__date", "status")
            .annotate(n=Count("id"), fines=Sum("fine_amount"))
            .order_by()
        ),
        list(Delivery.objects.values("channel", "status").annotate(n=Count("id")).order_by()),
    )


def _files(violation: Violation) -> list[str]:
    return [
        name
        for pair in Evidence.objects.filter(violation=violation).values_list("original", "derivative")
        for name in pair
    ]


def test_after_the_period_personal_data_leaves_rows_and_disk_and_statistics_stay(cases):
    notices, rejected, waiting = cases
    files = {violation.pk: _files(violation) for violation in [*(n.violation for n in notices), rejected, waiting]}
    storage = evidence_storage()
    statistics = _statistics()
    later = timezone.now() + timedelta(days=NOTICE_DAYS, minutes=1)
    # Received a day before "later": still within its own period.
    Violation.objects.filter(pk=waiting.pk).update(received_at=later - timedelta(days=1))

    counts = retention_purge(now=later, batch_size=1)

    assert counts.violations == {"notice": 2, "rejected": 1, "undecided": 0}
    assert (counts.notices, counts.evidence_files, counts.receipts) == (2, 6, 1)
    assert counts.deliveries == Delivery.objects.filter(notice__in=notices).count() > 0
    for notice in notices:
        notice.refresh_from_db()
        violation = Violation.objects.get(pk=notice.violation_id)
        assert (notice.vehicle_id, notice.owner_id, notice.verification_code_hash) == (None, None, "")
        assert (violation.plate, violation.plate_compact, violation.vehicle_id) == ("", "", None)
        assert not Delivery.objects.filter(notice=notice, contact_point__isnull=False).exists()
        for name in files[violation.pk]:
            assert not storage.exists(name)
        assert _files(violation) == ["", ""]
    assert DeliveryReceipt.objects.get().detail == ""
    rejected.refresh_from_db()
    assert (rejected.plate, rejected.rejection_reason) == ("", "")
    assert not any(storage.exists(name) for name in files[rejected.pk])
    # Waiting for an officer: no period runs yet.
    waiting.refresh_from_db()
    assert waiting.plate == "B 1234 XYZ"
    assert all(storage.exists(name) for name in files[waiting.pk])
    # Statistics: the same rows, regions, articles, days, statuses and fines.
    assert _statistics() == statistics
    assert Notice.objects.count() == 2


def test_before_the_period_nothing_changes(cases):
    notices, rejected, _ = cases
    storage = evidence_storage()
    files = [name for violation in (*(n.violation for n in notices), rejected) for name in _files(violation)]
    before = list(Violation.objects.order_by("pk").values()), list(Notice.objects.order_by("pk").values())

    # Neither period has run out (the shorter one, for rejected captures, ends tomorrow).
    counts = retention_purge(now=timezone.now() + timedelta(days=REJECTED_DAYS - 1))

    assert counts.batches == 0
    assert (list(Violation.objects.order_by("pk").values()), list(Notice.objects.order_by("pk").values())) == before
    assert all(storage.exists(name) for name in files)
    assert not AuditEvent.objects.filter(action="retention.purged").exists()


def test_a_capture_never_decided_loses_its_personal_data_after_its_period_and_statistics_stay(cases, officer):
    notices, _, waiting = cases
    files = _files(waiting)
    storage = evidence_storage()
    statistics = _statistics()
    later = timezone.now() + timedelta(days=UNDECIDED_DAYS, minutes=1)

    counts = retention_purge(now=later)

    assert counts.violations["undecided"] == 1
    waiting.refresh_from_db()
    assert (waiting.plate, waiting.plate_compact, waiting.vehicle_id) == ("", "", None)
    assert waiting.status == Violation.Status.RECEIVED
    assert not any(storage.exists(name) for name in files)
    assert _files(waiting) == ["", ""]
    # Counts by region, article and status are the same rows as before.
    assert _statistics() == statistics
    # Nothing is left to decide on: the capture leaves the review queue.
    assert waiting not in violation_queue(officer=officer)
    # Notices run on their own, longer period.
    assert all(Violation.objects.get(pk=n.violation_id).plate for n in notices)
    [event] = AuditEvent.objects.filter(action="retention.purged", data__rule="undecided")
    assert event.data["violations"] == {"notice": 0, "rejected": 0, "undecided": 1}
    assert event.data["evidence_files"] == len(files)


def test_a_capture_never_decided_is_kept_until_its_period_ends(cases, officer):
    _, _, waiting = cases
    files = _files(waiting)
    before = Violation.objects.filter(pk=waiting.pk).values().get()

    counts = retention_purge(now=timezone.now() + timedelta(days=UNDECIDED_DAYS - 1))

    assert counts.violations["undecided"] == 0
    assert Violation.objects.filter(pk=waiting.pk).values().get() == before
    assert all(evidence_storage().exists(name) for name in files)
    assert waiting in violation_queue(officer=officer)


def test_each_batch_is_one_audit_event_with_counts_only_and_a_second_run_finds_nothing(cases):
    later = timezone.now() + timedelta(days=NOTICE_DAYS, minutes=1)

    first = retention_purge(now=later, batch_size=2)
    second = retention_purge(now=later, batch_size=2)

    events = list(AuditEvent.objects.filter(action="retention.purged").order_by("created_at", "seq"))
    # Two notices in one batch, then the rejected capture, then the one never decided.
    assert len(events) == first.batches == 3
    assert [event.data["rule"] for event in events] == ["notice", "rejected", "undecided"]
    assert events[0].data["violations"] == {"notice": 2, "rejected": 0, "undecided": 0}
    assert events[2].data["violations"] == {"notice": 0, "rejected": 0, "undecided": 1}
    assert events[0].data["evidence_files"] == 4
    assert {event.actor_type for event in events} == {"system"}
    text = repr([event.data for event in events])
    assert "B 1234 XYZ" not in text
    assert "budi" not in text.lower()
    assert second.batches == 0
    call_command("audit", "verify", stdout=io.StringIO())


def test_the_command_counts_in_a_dry_run_and_purges_with_progress(cases):
    _, rejected, _ = cases
    past = timezone.now() - timedelta(days=NOTICE_DAYS + 1)
    Notice.objects.update(issued_at=past)
    Violation.objects.filter(pk=rejected.pk).update(decided_at=past)

    dry = io.StringIO()
    call_command("retention", "purge", "--dry-run", stdout=dry)

    assert "violations: 2 with a notice, 1 rejected, 0 never decided; evidence files: 6" in dry.getvalue()
    assert Violation.objects.exclude(plate_compact="").count() == 4

    out = io.StringIO()
    call_command("retention", "purge", "--batch-size", "2", stdout=out)

    assert "batch 1:" in out.getvalue()
    assert "Purged in 2 batch(es): violations: 2 with a notice, 1 rejected, 0 never decided" in out.getvalue()
    assert Violation.objects.exclude(plate_compact="").count() == 1  # the one waiting for an officer


def test_an_unlinked_notice_is_no_longer_found_on_the_portal(cases, client):
    notices, _, _ = cases
    notice = notices[0]
    retention_purge(now=timezone.now() + timedelta(days=NOTICE_DAYS, minutes=1))

    response = client.post("/cek/", {"number": notice.number, "plate": "B 1234 XYZ"})

    assert response.status_code != 303  # no grant: the same answer as for a wrong plate


def test_the_purge_runs_daily_from_beat(settings):

    scheduled = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled[retention_purge_task.name]["schedule"] == 86400.0
