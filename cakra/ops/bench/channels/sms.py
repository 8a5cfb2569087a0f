"""SMS in the bench: SMPP to the SMSC simulator, its receipts, its ceiling and its counts.

The system's SMPP adapter (``SmppSmsAdapter``, provider ``smpp``) binds to
the simulator (``cakra smsc-sim``) as a transmitter; receipts come back as
``deliver_sm`` to the receipt listener (``cakra smpp-receipts``), which runs
as one of the system's processes. The HTTP SMS gateway is left
out of the run, so that every SMS goes over SMPP. The provider's sender rate
limit is raised to 1,000 submit_sm per second (an operator agrees it with
the SMSC by contract) and the simulator's per-connection limit is off, so
that the pipeline and the bare client, not a policy limit, are measured.

The ceiling's bare client sends to the same simulator, to the magic
numbers that get no receipt (:mod:`cakra.simulators.magic`): receipts for
messages the system never sent would otherwise reach its listener.

SMPP carries no client reference the SMSC keeps, so the simulator counts
copies per (recipient, text) (``/_sim/received.json``). Each bench owner
has one notice, so the recipient names the delivery: numbers are matched to
deliveries through the contact's lookup hash, with no decryption.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.conf import settings

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.smpp import SmppSmsAdapter
from cakra.delivery.models import Delivery
from cakra.ops.bench.ceiling import bare_client_rate
from cakra.ops.bench.channels.base import RunPlace
from cakra.ops.bench.channels.phone import MAGIC_SERIALS, owner_mobile, simulator_counts
from cakra.ops.bench.config import REGION_CODE
from cakra.ops.bench.supervision import accepts, wait_for
from cakra.registry.models import ContactPoint
from cakra.registry.services import contact_hash
from cakra.simulators.loopback import LOOPBACK
from cakra.simulators.magic import Magic, magic_number

PROVIDER = "smpp"
CHANNEL = "sms"
SENDER_ID = "ETLE-BENCH"
# The provider's sender limit for the run, above what this machine reaches.
THROUGHPUT_PER_SECOND = 1000
# A notice SMS is one GSM-7 segment of about this size (cakra.delivery.messages.sms_render).
CEILING_TEXT = (
    f"{SENDER_ID}: Tilang ETLE B 1234 ABC tgl 07-12-2026. No ETLE/PMJ/2026/12/000123 kode K7Q2M9XD. "
    "Cek keaslian di 127.0.0.1:8000/cek/ Tanpa lampiran/APK."
)


def ceiling_message(n: int) -> OutboundMessage:
    return OutboundMessage(
        reference=f"ceiling-{n}",
        # Accepted and never confirmed: no receipt reaches the system's listener.
        recipient=magic_number(Magic.NO_RECEIPT, abs(n) % MAGIC_SERIALS),
        sender=SenderIdentity(address=SENDER_ID),
        text=CEILING_TEXT,
    )


class SmsBareClient:
    """The system's own SMPP adapter (GSM-7 encoding, submit_sm over a bound
    transceiver session, the answer's message_id checked), its session bound."""

    def __init__(self, port: int) -> None:
        options = {**settings.CAKRA_PROVIDERS[PROVIDER]["OPTIONS"], "HOST": LOOPBACK, "PORT": port}
        self.adapter = SmppSmsAdapter(options=options, name=PROVIDER)
        self.send(-1 - os.getpid())

    def send(self, n: int) -> None:
        """One message through the adapter's one entry point, as the worker sends."""
        [result] = self.adapter.send_many([ceiling_message(n)])
        if result.error is not None:
            raise result.error


def received_by_recipient(payload: object) -> Counter[str]:
    """Copies per recipient (E.164 digits) from the simulator's ``/_sim/received.json``
    (``{"<digits>:<text digest>": copies}``)."""
    if not isinstance(payload, dict):
        msg = "the SMSC simulator's received.json is not an object"
        raise TypeError(msg)
    counts: Counter[str] = Counter()
    for key, copies in payload.items():
        if not isinstance(key, str) or ":" not in key or isinstance(copies, bool) or not isinstance(copies, int):
            msg = "the SMSC simulator's received.json maps recipient:digest to counts"
            raise TypeError(msg)
        counts[key.partition(":")[0]] += copies
    return counts


def received_by_delivery(by_recipient: Mapping[str, int], *, deliveries: Mapping[str, str]) -> Counter[str]:
    """Copies per delivery id, ``deliveries`` mapping each recipient's digits to
    its one delivery; recipients of no delivery (the ceiling's) are left out."""
    counts: Counter[str] = Counter()
    for recipient, copies in by_recipient.items():
        delivery_id = deliveries.get(recipient)
        if delivery_id is not None:
            counts[delivery_id] += copies
    return counts


def sms_deliveries(*, notices: int, plan: tuple[str, ...]) -> dict[str, str]:
    """The run's SMS deliveries by their recipient's digits."""
    kind = ContactPoint.Kind.MOBILE.value
    numbers: dict[str, str] = {}
    for index in range(notices):
        number = owner_mobile(index, plan=plan)
        numbers[contact_hash(kind=kind, value=number)] = number.removeprefix("+")
    rows = Delivery.objects.filter(channel=CHANNEL, notice__region__code=REGION_CODE).values_list(
        "id", "contact_point__value_hash"
    )
    return {numbers[value_hash]: str(pk) for pk, value_hash in rows.iterator() if value_hash in numbers}


def simulator_received(port: int) -> Counter[str]:
    """Copies per recipient's digits, as the SMSC simulator's page reports them."""
    return received_by_recipient(simulator_counts(port, simulator="SMSC"))


@dataclass
class SmsRun:
    smpp_port: int
    http_port: int
    notices: int
    plan: tuple[str, ...]
    env: Mapping[str, str] = field(init=False)
    processes: Mapping[str, Sequence[str]] = field(init=False)
    confirms: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        self.env = {
            "CAKRA_SMSC_SIM_PORT": str(self.smpp_port),
            "CAKRA_SMSC_SIM_HTTP_PORT": str(self.http_port),
            # No per-connection limit: the ceiling's bare clients and the
            # workers both measure the machine, not a contract's rate.
            "CAKRA_SMSC_SIM_THROUGHPUT_PER_SECOND": "0",
            # The system's adapter and receipt listener, at the simulator.
            "CAKRA_SMPP_HOST": LOOPBACK,
            "CAKRA_SMPP_PORT": str(self.smpp_port),
            "CAKRA_PROVIDERS_JSON": json.dumps(
                {
                    PROVIDER: {"RATE_PER_SECOND": THROUGHPUT_PER_SECOND, "BURST": THROUGHPUT_PER_SECOND},
                    # Every SMS over SMPP: the HTTP gateway is not part of the run.
                    "sms-http": None,
                }
            ),
        }
        python = [sys.executable, "-m", "cakra.cli"]
        self.processes = {
            "smsc-sim": [*python, "smsc-sim"],
            "smpp-receipts": [*python, "smpp-receipts", "--provider", PROVIDER],
        }

    def wait_ready(self) -> None:
        wait_for(lambda: accepts(self.smpp_port), timeout=30, what="the SMSC simulator")
        wait_for(lambda: accepts(self.http_port), timeout=30, what="the SMSC simulator's pages")

    def ceiling(self, *, messages: int, processes: int) -> float:
        return bare_client_rate(
            messages=messages, processes=processes, make_client=functools.partial(SmsBareClient, self.smpp_port)
        )

    def received(self) -> Counter[str]:
        by_recipient = simulator_received(self.http_port)
        return received_by_delivery(by_recipient, deliveries=sms_deliveries(notices=self.notices, plan=self.plan))

    def remove(self) -> None:
        """Nothing: the simulator keeps its messages in memory, gone with its process."""


class SmsChannel:
    name: str = CHANNEL
    contact_kind: str = ContactPoint.Kind.MOBILE.value
    port_names: tuple[str, ...] = ("smpp", "smsc_http")
    stored_bytes_per_message: int = 0  # in the simulator's memory, not on disk

    def contact_value(self, index: int, *, plan: tuple[str, ...]) -> str:
        return owner_mobile(index, plan=plan)

    def region_fields(self) -> dict[str, object]:
        return {"sms_sender_id": SENDER_ID}

    def database_prepare(self) -> None:
        """Nothing: an SMS needs only the region's sender ID."""

    def run(self, *, place: RunPlace, ports: Mapping[str, int]) -> SmsRun:
        return SmsRun(smpp_port=ports["smpp"], http_port=ports["smsc_http"], notices=place.notices, plan=place.plan)
