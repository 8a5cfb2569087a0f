"""``cakra sink``: run the local SMTP sink and its web view until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cakra.simulators.smtp import MailSink

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Run the local SMTP sink (stores mail in a Maildir, verifies DKIM) and its web view on 127.0.0.1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--smtp-port", type=int, default=None, help="Default: CAKRA_SINK['SMTP_PORT'].")
        parser.add_argument("--http-port", type=int, default=None, help="Default: CAKRA_SINK['HTTP_PORT'].")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        with MailSink.from_settings(smtp_port=options["smtp_port"], http_port=options["http_port"]) as sink:
            self.stdout.write(f"SMTP sink: smtp://127.0.0.1:{sink.smtp_port} -> Maildir {sink.maildir_path}")
            self.stdout.write(f"Messages:  {sink.http_url}  (JSON: {sink.http_url}messages.json)")
            self.stdout.write("Press Ctrl-C to stop.")
            self.stdout.flush()
            while not stopping.wait(POLL_SECONDS):
                pass
        self.stdout.write("SMTP sink stopped.")
