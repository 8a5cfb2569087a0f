"""``cakra dkim dns-record``: the DNS TXT record receivers use to check our DKIM signatures."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.delivery.channels.dkim import dkim_key_load
from cakra.delivery.selectors import email_sender_domains


class Command(BaseCommand):
    help = "DKIM tools for the email channel."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        record = sub.add_parser(
            "dns-record",
            help="Print the TXT record to publish for each sender domain (every region's From domain).",
        )
        record.add_argument(
            "--domain",
            action="append",
            default=[],
            help="Print the record for this domain instead of the regions' domains (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        domains: list[str] = [d.strip().lower() for d in options["domain"] if d.strip()] or email_sender_domains()
        if not domains:
            msg = "no region has an email sender address yet; name the domain with --domain"
            raise CommandError(msg)
        key = dkim_key_load(str(settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]))
        selector = str(settings.CAKRA_EMAIL["DKIM_SELECTOR"])
        for domain in domains:
            self.stdout.write(key.txt_record(selector=selector, domain=domain))
