"""``cakra smsc-sim``: run the SMSC simulator (SMPP and its pages) until Ctrl-C or SIGTERM."""

# ruff: noqa: N999 - Django names a command after its file, and the command is spelled with a hyphen

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.simulators.smsc import SmscSimulator

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Run the SMSC simulator (SMPP v3.4 on 127.0.0.1, receipts by deliver_sm) and its phone pages."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--smpp-port", type=int, default=None, help="Default: CAKRA_SMSC_SIM['SMPP_PORT'].")
        parser.add_argument("--http-port", type=int, default=None, help="Default: CAKRA_SMSC_SIM['HTTP_PORT'].")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            simulator = SmscSimulator.from_settings(smpp_port=options["smpp_port"], http_port=options["http_port"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        with simulator as smsc:
            self.stdout.write(
                f"SMSC simulator: smpp://127.0.0.1:{smsc.smpp_port} (system_id {smsc.behaviour.system_id})"
            )
            self.stdout.write(f"Phones:         {smsc.http_url}  (JSON: {smsc.http_url}messages.json)")
            self.stdout.write("Press Ctrl-C to stop.")
            self.stdout.flush()
            while not stopping.wait(POLL_SECONDS):
                pass
        self.stdout.write("SMSC simulator stopped.")
