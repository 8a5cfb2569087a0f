"""The SMSC simulator on free loopback ports, and a bare smpplib client to talk to it."""

from __future__ import annotations

import pytest
from smpplib.client import Client

from cakra.simulators.smsc import SmscBehaviour, SmscSimulator

SYSTEM_ID = "cakra"
PASSWORD = "pw-12345"


@pytest.fixture
def smsc():
    behaviour = SmscBehaviour(system_id=SYSTEM_ID, password=PASSWORD, receipt_delay=0.0)
    with SmscSimulator(behaviour=behaviour, receipt_retry_base=0.05, receipt_response_timeout=1.0) as running:
        yield running


@pytest.fixture
def esme(smsc):
    """Clients bound to the simulator (closed at the end): ``esme("bind_transceiver")``."""
    opened: list[Client] = []

    def bind(mode="bind_transceiver", *, password=PASSWORD):
        client = Client("127.0.0.1", smsc.smpp_port, timeout=2, allow_unknown_opt_params=True)
        client.connect()
        opened.append(client)
        getattr(client, mode)(system_id=SYSTEM_ID, password=password)
        return client

    yield bind
    for client in opened:
        client.disconnect()
