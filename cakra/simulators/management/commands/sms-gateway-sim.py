# ruff: noqa: N999 - the command is named with hyphens, as `cakra sms-gateway-sim` is typed
"""``cakra sms-gateway-sim``: run the Twilio-style SMS gateway simulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cakra.simulators.smsgateway import SmsGateway

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Run the Twilio-style HTTP SMS gateway simulator (Messages API, signed status callbacks) on 127.0.0.1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--http-port", type=int, default=None, help="Default: CAKRA_SMS_GATEWAY_SIM['HTTP_PORT'].")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        with SmsGateway.from_settings(http_port=options["http_port"]) as gateway:
            self.stdout.write(
                f"SMS gateway: {gateway.base_url}/2010-04-01/Accounts/{gateway.account_sid}/Messages.json"
            )
            self.stdout.write(f"Phones:      {gateway.base_url}/  (JSON: {gateway.base_url}/messages.json)")
            self.stdout.write("Press Ctrl-C to stop.")
            self.stdout.flush()
            while not stopping.wait(POLL_SECONDS):
                pass
        self.stdout.write("SMS gateway stopped.")
