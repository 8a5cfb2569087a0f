"""Validation issues a notice in one transaction with its audit events and plan."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from django.db import connection

from cakra.audit.models import AuditEvent
from cakra.backoffice.decisions import violation_validate
from cakra.delivery.models import Delivery
from cakra.enforcement.errors import InvalidStateError, NoRegistryMatchError, NotFoundError
from cakra.enforcement.models import Article, Violation
from cakra.enforcement.numbers import (
    CODE_ALPHABET,
    CODE_LENGTH,
    notice_number_generate,
    notice_number_is_valid,
    verification_code_generate,
)
from cakra.enforcement.services import verification_code_hash, violation_reject
from cakra.registry.models import ContactPoint, Owner
from tests import factories
from tests.factories import OfficerFactory


def make_violation(region, vehicle=None):
    return factories.make_violation(region=region, vehicle=vehicle, captured_at="2026-11-28T08:00:00+07:00")


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
    violation = make_violation(region, vehicle)
    notice = violation_validate(officer=officer, violation_id=violation.id)
    assert notice_number_is_valid(notice.number)
    assert vehicle.plate_compact not in notice.number
    assert notice.fine_amount == 500000
    assert notice.owner_id == vehicle.owner_id
    assert notice.verification_code_hash == verification_code_hash(number=notice.number, code=notice.verification_code)
    assert notice.verification_code not in notice.verification_code_hash
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"violation.validated", "notice.issued", "delivery.planned"} <= actions


def test_the_deadline_follows_the_region_policy(vehicle, officer, region):
    region.confirmation_days = 5
    region.confirmation_basis = "violation"
    region.save()
    notice = violation_validate(officer=officer, violation_id=make_violation(region, vehicle).id)
    assert notice.confirm_by == date(2026, 12, 3)  # 28 Nov (WIB) + 5 days


def test_the_plan_takes_only_enabled_channels_with_a_contact_point(vehicle, officer, region, settings):
    settings.CAKRA_ENABLED_CHANNELS = ["email", "post"]
    region.channel_order = ["whatsapp", "post", "email"]
    region.save()
    notice = violation_validate(officer=officer, violation_id=make_violation(region, vehicle).id)
    plan = list(Delivery.objects.filter(notice=notice).order_by("step").values_list("channel", "status"))
    assert plan == [("post", "pending"), ("email", "planned")]


def test_an_owner_without_reachable_contacts_gets_an_empty_plan(vehicle, officer, region):
    ContactPoint.objects.filter(owner_id=vehicle.owner_id, kind="email").update(is_active=False)
    notice = violation_validate(officer=officer, violation_id=make_violation(region, vehicle).id)
    assert not Delivery.objects.filter(notice=notice).exists()


def test_a_violation_is_validated_once(vehicle, officer, region):
    violation = make_violation(region, vehicle)
    violation_validate(officer=officer, violation_id=violation.id)
    with pytest.raises(InvalidStateError):
        violation_validate(officer=officer, violation_id=violation.id)


def test_without_a_registry_match_no_notice_is_issued(officer, region):
    violation = make_violation(region)
    with pytest.raises(NoRegistryMatchError):
        violation_validate(officer=officer, violation_id=violation.id)
    violation.refresh_from_db()
    assert violation.status == Violation.Status.RECEIVED
    assert not AuditEvent.objects.filter(action="violation.validated").exists()


def test_another_regions_officer_gets_not_found(vehicle, region, other_region):
    violation = make_violation(region, vehicle)
    stranger = OfficerFactory.create(region=other_region)
    with pytest.raises(NotFoundError):
        violation_validate(officer=stranger, violation_id=violation.id)
    with pytest.raises(NotFoundError):
        violation_reject(officer=stranger, violation_id=violation.id, reason="not mine")


def test_rejection_needs_a_reason_and_keeps_it_out_of_the_audit_trail(vehicle, officer, region):
    violation = make_violation(region, vehicle)
    with pytest.raises(InvalidStateError):
        violation_reject(officer=officer, violation_id=violation.id, reason="   ")
    rejected = violation_reject(officer=officer, violation_id=violation.id, reason="Plat tidak terbaca jelas")
    assert rejected.status == Violation.Status.REJECTED
    event = AuditEvent.objects.get(action="violation.rejected")
    assert "terbaca" not in str(event.data)


def test_numbers_and_codes_have_their_shape_and_use_every_symbol():
    """One random draw each: 16 digits (no leading zero, valid check digits), 8 characters of Crockford's base32."""

    numbers = [notice_number_generate() for _ in range(2000)]
    codes = [verification_code_generate() for _ in range(2000)]

    assert all(len(number) == 16 and number[0] != "0" and notice_number_is_valid(number) for number in numbers)
    assert {number[0] for number in numbers} == set("123456789")
    assert all(set(number[1:14]) <= set("0123456789") for number in numbers)
    assert all(len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET) for code in codes)
    by_position = [Counter(code[position] for code in codes) for position in range(CODE_LENGTH)]
    assert all(set(counts) == set(CODE_ALPHABET) for counts in by_position)
    assert len(set(numbers)) == len(numbers)
    assert len(set(codes)) == len(codes)
