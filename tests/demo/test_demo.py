"""`cakra demo` seeds a working system, and the audit chain over it verifies."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from cakra.api.models import ApiKey
from cakra.audit.selectors import audit_verify_chain
from cakra.audit.triggers import audit_triggers_remove
from cakra.backoffice.models import Officer, OfficerTOTPDevice
from cakra.demo.seed import DemoCredentials
from cakra.enforcement.models import Evidence, Notice, Region, Violation
from cakra.registry.models import ContactPoint, Vehicle

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(capsys):
    call_command("demo", vehicles=8, violations=12, seed=7)
    return capsys.readouterr().out


def test_demo_seeds_regions_registry_officers_keys_and_violations(seeded):
    assert set(Region.objects.values_list("code", flat=True)) == {"METRO", "JABAR", "JATIM"}
    assert Vehicle.objects.count() >= 20
    assert ContactPoint.objects.filter(kind="postal").count() == Vehicle.objects.count()
    assert Officer.objects.count() == 3
    assert OfficerTOTPDevice.objects.filter(confirmed=True).count() == 3
    assert ApiKey.objects.filter(pre_validated=True).count() == 3
    assert Violation.objects.count() == 12
    assert Evidence.objects.count() == 12
    assert Notice.objects.count() == Violation.objects.filter(status="validated").count()
    assert "Citizen portal" in seeded
    assert "metro.validator" in seeded


def test_demo_plates_follow_their_region_codes(seeded):
    for region in Region.objects.all():
        plates = Violation.objects.filter(region=region).values_list("plate", flat=True)
        assert all(plate.split(" ")[0] in region.plate_prefixes for plate in plates)


def test_demo_mobile_numbers_are_indonesian_e164(seeded):
    for contact in ContactPoint.objects.filter(kind="mobile"):
        assert contact.value.startswith("+628")


def test_a_second_run_adds_nothing_and_prints_the_same_credentials(seeded, capsys):
    violations = Violation.objects.count()
    call_command("demo", vehicles=8, violations=12, seed=7)
    again = capsys.readouterr().out
    assert Violation.objects.count() == violations
    credentials = DemoCredentials.load()
    assert credentials is not None
    assert credentials.officers[0]["password"] in again


def test_audit_verify_passes_on_the_demo_and_fails_on_a_tampered_row(seeded, capsys):
    call_command("audit", "verify")
    assert "audit chain OK" in capsys.readouterr().out
    target = audit_verify_chain().checked // 2
    audit_triggers_remove(connection)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_id = %s WHERE seq = %s", ["intruder", target])
    with pytest.raises(CommandError, match=rf"BROKEN at event #{target}\b"):
        call_command("audit", "verify")


def test_totp_helper_prints_a_code_the_device_accepts(seeded, capsys):
    call_command("demo", totp="metro.validator")
    code = capsys.readouterr().out.strip()
    device = OfficerTOTPDevice.objects.get(user__username="metro.validator")
    assert device.verify_token(code)


def test_totp_helper_refuses_non_demo_officers(seeded):
    with pytest.raises(CommandError):
        call_command("demo", totp="nobody")


def test_demo_is_refused_in_production(settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="production"):
        call_command("demo")
