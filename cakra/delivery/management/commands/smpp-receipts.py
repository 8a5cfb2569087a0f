"""``cakra smpp-receipts``: take SMPP delivery receipts while no worker is bound, until Ctrl-C or SIGTERM."""

# ruff: noqa: N999 - Django names a command after its file, and the command is spelled with a hyphen

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.delivery.smpp_listener import ReceiptListener, smpp_providers

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Bind to each SMPP provider's SMSC and record the deliver_sm receipts that arrive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", action="append", default=None, help="Only this provider (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        providers = smpp_providers()
        if options["provider"]:
            unknown = sorted(set(options["provider"]) - set(providers))
            if unknown:
                raise CommandError(f"not an SMPP provider in CAKRA_PROVIDERS: {', '.join(unknown)}")
            providers = {name: providers[name] for name in options["provider"]}
        if not providers:
            raise CommandError("no SMPP provider in CAKRA_PROVIDERS")
        stopping = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            listeners = [ReceiptListener(provider=name, options=opts) for name, opts in providers.items()]
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for listener in listeners:
            listener.start()
        self.stdout.write(f"Taking SMPP receipts for: {', '.join(providers)}. Press Ctrl-C to stop.")
        self.stdout.flush()
        while not stopping.wait(POLL_SECONDS):
            pass
        for listener in listeners:
            listener.stop()
        self.stdout.write("SMPP receipt listener stopped.")
