"""WhatsApp in the bench: the owners' numbers, the Cloud API simulator, its ceiling and its counts.

The system's adapter (``WhatsAppCloudAdapter``) sends to the simulator
(``cakra whatsapp-sim``), whose signed status webhooks go to the bench's
web server, as Meta's would. The bench region's official number is the
simulator's one business number. Meta's throughput of a number starts at
80 messages/s and is raised on request up to 1,000/s; the bench runs at
that upgraded tier, in the simulator and in the provider's sender rate
limit (``RATE_PER_SECOND``/``BURST``), so that the pipeline, not a policy
limit, is measured.

The ceiling's bare client sends to a second process of the same simulator
with its webhooks off and no throughput limit: statuses of messages the
system never sent would otherwise reach its webhook (and be answered 503
and redelivered, as unknown references are), and the limit would measure
the policy, not the path. (The SMTP sink's ``silent`` recipients serve the
same purpose for email.)
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

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity, TemplateMessage
from cakra.delivery.channels.whatsapp import WhatsAppCloudAdapter
from cakra.delivery.message_templates import (
    message_templates_sync,
    template_definitions_load,
    template_text_render,
)
from cakra.delivery.messages import WHATSAPP_LANGUAGE, WHATSAPP_NOTICE_TEMPLATE
from cakra.ops.bench.ceiling import bare_client_rate
from cakra.ops.bench.channels.base import RunPlace
from cakra.ops.bench.channels.phone import owner_mobile, simulator_counts
from cakra.ops.bench.supervision import accepts, wait_for
from cakra.registry.models import ContactPoint
from cakra.simulators.loopback import LOOPBACK

# The bench region's official number, as the simulator knows it.
PHONE_NUMBER_ID = "109900000009990"
DISPLAY_NUMBER = "+62 811-9900-999"
VERIFIED_NAME = "ETLE Bench"
API_VERSION = "v21.0"
# Meta's highest standard throughput tier, messages per second per number.
RATE_PER_SECOND = 1000
WEBHOOK_PATH = "/api/v1/webhooks/whatsapp/whatsapp-sim"
CEILING_REFERENCE_PREFIX = "ceiling-"

# The ceiling's message: the notice template with parameters of a real
# notice's length, so that the request is the pipeline's size.
CEILING_PARAMETERS = (
    "Polda Metro Jaya",
    "B 1234 ABC",
    "Senin, 7 Desember 2026 09.15 WIB",
    "Jl. Jend. Sudirman, Jakarta",
    "Pasal 287 ayat (1) - Melanggar rambu lalu lintas",
    "ETLE/PMJ/2026/12/000123",
    "K7Q2-M9XD",
    "Rp500.000",
    "Senin, 14 Desember 2026",
    "http://127.0.0.1:8000/cek/ETLE-PMJ-2026-12-000123",
)


def business_numbers() -> dict[str, dict[str, str]]:
    """The simulator's business numbers: the bench region's one."""
    return {
        PHONE_NUMBER_ID: {
            "display_phone_number": "".join(ch for ch in DISPLAY_NUMBER if ch.isdigit()),
            "verified_name": VERIFIED_NAME,
        }
    }


def ceiling_message(n: int) -> OutboundMessage:
    template = TemplateMessage(name=WHATSAPP_NOTICE_TEMPLATE, language=WHATSAPP_LANGUAGE, parameters=CEILING_PARAMETERS)
    return OutboundMessage(
        reference=f"{CEILING_REFERENCE_PREFIX}{n}",
        # An ordinary number of its own per message (the pair rate, were it on, concerns one recipient).
        recipient=f"+62813{abs(n) % 10**8:08d}",
        sender=SenderIdentity(address=PHONE_NUMBER_ID, display_name=VERIFIED_NAME),
        text=template_text_render(_notice_body(), CEILING_PARAMETERS),
        template=template,
    )


@functools.cache
def _notice_body() -> str:
    return next(
        definition.body
        for definition in template_definitions_load()
        if (definition.name, definition.language) == (WHATSAPP_NOTICE_TEMPLATE, WHATSAPP_LANGUAGE)
    )


class WhatsAppBareClient:
    """The system's own Cloud API adapter (JSON request over a kept HTTP
    connection, the answer's wamid checked), its connection open."""

    def __init__(self, port: int) -> None:
        options = {
            "BASE_URL": f"http://{LOOPBACK}:{port}",
            "API_VERSION": API_VERSION,
            "ACCESS_TOKEN": str(settings.CAKRA_WHATSAPP_SIM["ACCESS_TOKEN"]),
            "TIMEOUT": 10,
        }
        self.adapter = WhatsAppCloudAdapter(options=options, name="whatsapp-ceiling")
        self.send(-1 - os.getpid())

    def send(self, n: int) -> None:
        """One message through the adapter's one entry point, as the worker sends."""
        [result] = self.adapter.send_many([ceiling_message(n)])
        if result.error is not None:
            raise result.error


def received_parse(payload: object) -> Counter[str]:
    """Copies per delivery id from the simulator's ``/_sim/received.json``
    (``{biz_opaque_callback_data: copies}``), the ceiling's messages left out."""
    if not isinstance(payload, dict):
        msg = "the WhatsApp simulator's received.json is not an object"
        raise TypeError(msg)
    counts: Counter[str] = Counter()
    for reference, copies in payload.items():
        if not isinstance(reference, str) or isinstance(copies, bool) or not isinstance(copies, int):
            msg = "the WhatsApp simulator's received.json maps references to counts"
            raise TypeError(msg)
        if not reference.startswith(CEILING_REFERENCE_PREFIX):
            counts[reference] += copies
    return counts


def simulator_received(port: int) -> Counter[str]:
    return received_parse(simulator_counts(port, simulator="WhatsApp"))


@dataclass
class WhatsAppRun:
    http_port: int
    ceiling_port: int
    web_port: int
    env: Mapping[str, str] = field(init=False)
    processes: Mapping[str, Sequence[str]] = field(init=False)
    confirms: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        base_url = f"http://{LOOPBACK}:{self.http_port}"
        self.env = {
            # The system's adapter, at the simulator.
            "CAKRA_WHATSAPP_BASE_URL": base_url,
            "CAKRA_WHATSAPP_SIM_PORT": str(self.http_port),
            "CAKRA_WHATSAPP_SIM_BUSINESS_NUMBERS_JSON": json.dumps(business_numbers()),
            # Statuses to the bench's web server, signed with the app secret it checks.
            "CAKRA_WHATSAPP_SIM_WEBHOOKS": "1",
            "CAKRA_WHATSAPP_SIM_WEBHOOK_URL": f"http://{LOOPBACK}:{self.web_port}{WEBHOOK_PATH}",
            "CAKRA_WHATSAPP_SIM_RATE_PER_SECOND": str(RATE_PER_SECOND),
            "CAKRA_PROVIDERS_JSON": json.dumps(
                {"whatsapp": {"RATE_PER_SECOND": RATE_PER_SECOND, "BURST": RATE_PER_SECOND}}
            ),
        }
        command = [sys.executable, "-m", "cakra.cli", "whatsapp-sim"]
        self.processes = {
            "whatsapp-sim": command,
            # The ceiling's own simulator: no webhooks, no throughput limit (module docstring).
            "whatsapp-sim-ceiling": [
                "env",
                "CAKRA_WHATSAPP_SIM_WEBHOOKS=0",
                "CAKRA_WHATSAPP_SIM_RATE_PER_SECOND=0",
                *command,
                "--http-port",
                str(self.ceiling_port),
            ],
        }

    def wait_ready(self) -> None:
        wait_for(lambda: accepts(self.http_port), timeout=30, what="the WhatsApp simulator")
        wait_for(lambda: accepts(self.ceiling_port), timeout=30, what="the WhatsApp simulator of the ceiling")

    def ceiling(self, *, messages: int, processes: int) -> float:
        return bare_client_rate(
            messages=messages,
            processes=processes,
            make_client=functools.partial(WhatsAppBareClient, self.ceiling_port),
        )

    def received(self) -> Counter[str]:
        return simulator_received(self.http_port)

    def remove(self) -> None:
        """Nothing: the simulator keeps its messages in memory, gone with its process."""


class WhatsAppChannel:
    name: str = "whatsapp"
    contact_kind: str = ContactPoint.Kind.MOBILE.value
    port_names: tuple[str, ...] = ("whatsapp", "whatsapp_ceiling")
    stored_bytes_per_message: int = 0  # in the simulator's memory, not on disk

    def contact_value(self, index: int, *, plan: tuple[str, ...]) -> str:
        return owner_mobile(index, plan=plan)

    def region_fields(self) -> dict[str, object]:
        return {
            "whatsapp_sender": DISPLAY_NUMBER,
            "whatsapp_phone_number_id": PHONE_NUMBER_ID,
            "whatsapp_display_name": VERIFIED_NAME,
        }

    def database_prepare(self) -> None:
        """The shipped templates, approved (as Meta's review would, before any notice can go)."""
        message_templates_sync(approved=True)

    def run(self, *, place: RunPlace, ports: Mapping[str, int]) -> WhatsAppRun:
        return WhatsAppRun(http_port=ports["whatsapp"], ceiling_port=ports["whatsapp_ceiling"], web_port=ports["web"])
