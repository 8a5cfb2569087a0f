"""``cakra audit verify`` checks the audit chains and names the first broken
link; ``cakra audit anchor`` writes the chain heads for safekeeping outside
the database, and ``verify --anchor FILE`` proves nothing anchored was cut off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.audit.selectors import ChainReport, audit_anchor, audit_verify_anchor, audit_verify_chain


def _broken(report: ChainReport, *, what: str) -> CommandError:
    return CommandError(
        f"{what} BROKEN at event #{report.broken_seq} of chain {report.broken_chain}: "
        f"{report.reason} ({report.checked} checked before it)"
    )


class Command(BaseCommand):
    help = "Audit trail tools."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="Verify the hash chains of every audit event.")
        verify.add_argument(
            "--anchor",
            action="append",
            default=[],
            metavar="FILE",
            help="also check that every event named by this anchor (from `cakra audit anchor`) is still there",
        )
        anchor = sub.add_parser(
            "anchor", help="Write every chain's head, with a MAC, to keep outside the database (daily)."
        )
        anchor.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "anchor":
            document = json.dumps(audit_anchor(), sort_keys=True)
            if options["output"]:
                Path(options["output"]).write_text(document + "\n", encoding="utf-8")
                self.stderr.write(f"anchor written to {options['output']}")
            else:
                self.stdout.write(document)
            return
        report = audit_verify_chain()
        if not report.ok:
            raise _broken(report, what="audit chain")
        self.stdout.write(f"audit chain OK: {report.checked} events verified in {report.chains} chains")
        for path in options["anchor"]:
            try:
                anchor = json.loads(Path(path).read_text(encoding="utf-8"))
                anchored = audit_verify_anchor(anchor)
            except (OSError, ValueError) as exc:  # AnchorError and malformed JSON are ValueErrors
                raise CommandError(f"anchor {path}: {exc}") from None
            if not anchored.ok:
                raise _broken(anchored, what=f"audit chain (against anchor {path})")
            self.stdout.write(f"anchor {path} OK: {anchored.checked} anchored chain heads still in place")
