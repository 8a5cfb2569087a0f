from __future__ import annotations

import pytest

from cakra.simulators.whatsapp import WhatsAppSimulator
from tests.simulators.whatsapp.cloud import Receiver, simulator_for


@pytest.fixture
def receiver():
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


@pytest.fixture
def sim(receiver):
    with simulator_for(receiver) as running:
        yield running


@pytest.fixture
def sim_factory(receiver):
    started: list[WhatsAppSimulator] = []

    def make(**overrides) -> WhatsAppSimulator:
        simulator = simulator_for(receiver, **overrides).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()
