"""``cakra audit verify``: check the audit chain, name the first broken link."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.audit.selectors import audit_verify_chain


class Command(BaseCommand):
    help = "Audit trail tools."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("verify", help="Verify the hash chains of every audit event.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify_chain()
        if not report.ok:
            msg = (
                f"audit chain BROKEN at event #{report.broken_seq} of chain {report.broken_chain}: "
                f"{report.reason} ({report.checked} events intact before it)"
            )
            raise CommandError(msg)
        self.stdout.write(f"audit chain OK: {report.checked} events verified in {report.chains} chains")
