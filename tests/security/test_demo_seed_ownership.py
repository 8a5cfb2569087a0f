"""Dangerous commands: `cakra demo` never overwrites accounts it did not create."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from cakra.demo.seed import DemoCredentials
from tests.factories import OfficerFactory, RegionFactory

pytestmark = pytest.mark.django_db


def test_demo_refuses_a_database_it_did_not_seed_and_leaves_its_officers_alone(settings):
    (settings.DATA_DIR / "demo-credentials.json").unlink(missing_ok=True)
    region = RegionFactory(code="METRO", name="Polda Metro Jaya", plate_prefixes=["B"])
    # A real account that happens to carry the user name the demo gives its validator.
    officer = OfficerFactory.create(region=region, username="metro.validator", password="a real officer's passphrase")
    device = TOTPDevice.objects.create(user=officer, name="phone", confirmed=True)

    with pytest.raises(CommandError, match="did not seed; nothing was changed"):
        call_command("demo", vehicles=2, violations=0, quiet=True)

    officer.refresh_from_db()
    assert officer.check_password("a real officer's passphrase")
    assert list(TOTPDevice.objects.filter(user=officer)) == [device]
    assert DemoCredentials.load() is None
