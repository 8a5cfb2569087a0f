"""Fixtures of the attack tests: the portal's and the back office's, shared."""

from __future__ import annotations

import pytest

from tests.backoffice.conftest import english_client, sign_in
from tests.factories import OfficerFactory
from tests.portal.conftest import _static_root_exists, issue_notice

__all__ = ["_static_root_exists"]


@pytest.fixture
def officer_client(officer):
    """An officer's fully signed-in session (password and TOTP)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=officer, name="test", confirmed=True)
    return sign_in(english_client(), officer, device)


@pytest.fixture
def issued(vehicle, officer, region):
    """An issued notice for vehicle B 1234 XYZ with one derived evidence photo."""
    return issue_notice(vehicle=vehicle, officer=officer, region=region, capture_id="CAP-SECURITY")


@pytest.fixture
def enrolling_officer(region):
    """An officer who has a password and an enrolment code but no authenticator yet."""
    return OfficerFactory(region=region)
