"""rows_insert: the intake's inserts, one statement per table, storing exactly what bulk_create would."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.db import rows_insert, time_ordered_uuid
from cakra.enforcement.models import Article, Evidence, Notice, Violation
from cakra.security.crypto import key_ring

pytestmark = pytest.mark.django_db


def _stored_values(obj):
    fresh = type(obj).objects.get(pk=obj.pk)
    return {field.attname: getattr(fresh, field.attname) for field in type(obj)._meta.concrete_fields}


def _values(obj):
    return {field.attname: getattr(obj, field.attname) for field in type(obj)._meta.concrete_fields}


def _violation(region, vehicle, **overrides):
    now = timezone.now()
    fields = {
        "region": region,
        "capture_id": f"ROWS-{uuid.uuid4().hex[:8]}",
        "payload_hash": "a" * 64,
        "camera_id": "CAM-1",
        "captured_at": now - timedelta(hours=1),
        "location": 'Jl. Sudirman "arah" Blok M \\ ü',
        "latitude": Decimal("-6.224524"),
        "longitude": None,
        "plate": "B 1234 XYZ",
        "plate_compact": "B1234XYZ",
        "article": Article.objects.get(code="287(1)"),
        "measured_speed_kmh": 92,
        "speed_limit_kmh": None,
        "vehicle_id": vehicle.pk,
        "status": Violation.Status.VALIDATED,
        "decided_at": now,
        "pre_validated": True,
    }
    return Violation(**{**fields, **overrides})


def test_rows_read_back_as_they_were_written(region, vehicle):
    violations = [_violation(region, vehicle), _violation(region, vehicle, latitude=None, status="received")]
    rows_insert(violations)
    evidence = Evidence(
        violation=violations[0],
        position=0,
        kind="vehicle",
        original="original/1/2026/11/29/x.jpg",
        original_sha256="b" * 64,
        content_type="image/jpeg",
        size_bytes=290_000,
        width=1920,
        height=1080,
    )
    rows_insert([evidence])
    notice = Notice(
        number="1234567890123452",
        violation=violations[0],
        region=region,
        vehicle_id=vehicle.pk,
        owner_id=vehicle.owner_id,
        article=violations[0].article,
        fine_amount=500_000,
        issued_at=timezone.now(),
        confirm_by=date(2026, 12, 7),
        verification_code_hash="c" * 64,
        verification_code="ABCD1234",
    )
    rows_insert([notice])

    for obj in [*violations, evidence, notice]:
        assert not obj._state.adding
        assert _stored_values(obj) == _values(obj)
    assert all(violation.received_at is not None for violation in violations)  # the automatic timestamp
    with connection.cursor() as cursor:
        cursor.execute("SELECT verification_code FROM enforcement_notice WHERE id = %s", [notice.pk.hex])
        (stored_code,) = cursor.fetchone()
    assert "ABCD1234" not in stored_code  # encrypted at rest, as the field stores it
    assert key_ring().decrypt(stored_code, context=f"enforcement_notice.verification_code.{notice.pk}") == "ABCD1234"


def test_a_duplicate_is_an_integrity_error_and_stores_nothing(region, vehicle):
    first = _violation(region, vehicle)
    rows_insert([first])
    again = _violation(region, vehicle, capture_id=first.capture_id)
    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert([_violation(region, vehicle), again])
    assert Violation.objects.filter(region=region).count() == 1


def test_rows_the_database_numbers_get_their_keys_in_order_with_the_values_exact():
    # Audit events: numbered by the database, JSON data, microsecond timestamps (hashed by the chain).
    moment = timezone.now().replace(microsecond=123456)
    events = [
        AuditEvent(
            chain=999,
            seq=seq,
            created_at=moment,
            actor_type="system",
            action="test.rows_insert",
            object_type="test",
            object_id=str(seq),
            data={"n": seq, "text": 'ü "quoted"', "nested": [1, {"a": None}]},
            prev_hash="0" * 64,
            hash=f"{seq:064d}",
        )
        for seq in (1, 2, 3)
    ]

    rows_insert(events)

    assert all(event.pk is not None for event in events)
    assert [event.pk for event in events] == sorted(event.pk for event in events)
    for event in events:
        assert _stored_values(event) == _values(event)


def test_new_rows_of_the_busy_tables_get_time_ordered_ids(region, vehicle):
    """Version 7 ids: new keys go to the right-hand edge of each index (cakra.db.time_ordered_uuid)."""
    violations = [_violation(region, vehicle) for _ in range(3)]
    rows_insert(violations)

    ids = [violation.id for violation in violations]
    assert {key.version for key in ids} == {7}
    before = time_ordered_uuid()
    time.sleep(0.002)
    assert time_ordered_uuid() > before  # a later millisecond sorts later
    assert Notice._meta.pk.default is Evidence._meta.pk.default is time_ordered_uuid
