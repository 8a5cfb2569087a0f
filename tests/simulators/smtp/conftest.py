from __future__ import annotations

import pytest

from cakra.simulators.smtp import MailSink
from tests.simulators.smtp.mail import SELECTOR


@pytest.fixture
def dkim_pem(settings):
    return settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]


@pytest.fixture
def sink(tmp_path, dkim_pem):
    with MailSink(maildir=tmp_path / "mail", dkim_private_key=dkim_pem, dkim_selector=SELECTOR) as running:
        yield running
