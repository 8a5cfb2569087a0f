"""``cakra whatsapp-sim``: run the WhatsApp Cloud API simulator until Ctrl-C or SIGTERM."""

# ruff: noqa: N999 - Django names a command after its file, and the command is spelled with a hyphen

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.simulators.whatsapp import WhatsAppSimulator

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Run the local WhatsApp Business Cloud API simulator (Graph API, signed webhooks, phone pages) on 127.0.0.1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--http-port", type=int, default=None, help="Default: CAKRA_WHATSAPP_SIM['HTTP_PORT'].")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            configured = WhatsAppSimulator.from_settings(http_port=options["http_port"])
        except (OSError, ValueError) as exc:  # e.g. no templates file yet, or a malformed one
            raise CommandError(f"CAKRA_WHATSAPP_SIM is not usable: {exc}") from exc
        with configured as simulator:
            numbers = ", ".join(sorted(simulator.api.business_numbers))
            webhooks = simulator.webhooks.url if simulator.webhooks is not None else "off"
            self.stdout.write(f"WhatsApp Cloud API simulator: {simulator.base_url}/v21.0/<phone_number_id>/messages")
            self.stdout.write(f"Business numbers (phone_number_id): {numbers}; WABA {simulator.api.waba_id}")
            self.stdout.write(f"Webhooks: {webhooks}")
            self.stdout.write(f"Phones:   {simulator.base_url}/  (JSON: {simulator.base_url}/messages.json)")
            self.stdout.write("Press Ctrl-C to stop.")
            self.stdout.flush()
            while not stopping.wait(POLL_SECONDS):
                pass
        self.stdout.write("WhatsApp simulator stopped.")
