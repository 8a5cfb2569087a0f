"""The foundation services: registry encryption, notice issue, audit chain."""

from __future__ import annotations

import pytest
from django.db import connection

from cakra.enforcement.models import Article, Violation
from cakra.enforcement.numbers import notice_number_is_valid
from cakra.enforcement.services import violation_validate
from cakra.registry.models import Owner


def test_personal_fields_are_encrypted_at_rest(vehicle):
    owner = Owner.objects.get(pk=vehicle.owner_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, nik FROM registry_owner WHERE id = %s",
            [owner.pk.hex if connection.vendor == "sqlite" else owner.pk],
        )
        raw_name, raw_nik = cursor.fetchone()
    assert owner.name not in raw_name
    assert raw_name.startswith("dev1$")
    assert owner.nik not in raw_nik


@pytest.mark.django_db
def test_articles_are_seeded_with_statutory_fines():
    assert Article.objects.get(code="283").max_fine == 750000
    assert Article.objects.get(code="291").max_fine == 250000
    assert Article.objects.count() == 8


def test_officer_validation_issues_a_notice(vehicle, officer, region):
    violation = Violation.objects.create(
        region=region,
        capture_id="CAP-1",
        payload_hash="0" * 64,
        camera_id="CAM-1",
        captured_at="2026-11-28T08:00:00+07:00",
        location="Jl. Jend. Sudirman",
        plate=vehicle.plate,
        plate_compact=vehicle.plate_compact,
        article=Article.objects.get(code="287(2)"),
        vehicle=vehicle,
    )
    notice = violation_validate(officer=officer, violation_id=violation.id)
    assert notice_number_is_valid(notice.number)
    assert notice.fine_amount == 500000
    assert notice.deliveries.count() == 1
    assert notice.deliveries.get().channel == "email"
