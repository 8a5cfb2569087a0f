"""Fixtures of the attack tests: the portal's and the back office's, shared."""

from __future__ import annotations

import pytest

from tests.backoffice.conftest import english_client, otp_device, sign_in
from tests.portal.conftest import _static_root_exists, issued, other_issued

__all__ = ["_static_root_exists", "issued", "other_issued", "otp_device"]


@pytest.fixture
def officer_client(officer, otp_device):
    """An officer's fully signed-in session (password and TOTP)."""
    return sign_in(english_client(), officer, otp_device)
