"""``cakra retention purge [--dry-run]``: remove personal data past its retention period.

The same service as the daily beat task (``retention_purge_task``); run it by
hand to see what is due (``--dry-run``) or to catch up after a long outage.
Periods: ``CAKRA_RETENTION`` in the settings (docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.ops.retention import RetentionCounts, retention_due_counts, retention_purge


def _line(counts: RetentionCounts) -> str:
    return (
        f"violations: {counts.violations['notice']} with a notice, {counts.violations['rejected']} rejected, "
        f"{counts.violations['undecided']} never decided; "
        f"evidence files: {counts.evidence_files}; notices: {counts.notices}; "
        f"delivery addresses: {counts.deliveries}; receipt texts: {counts.receipts}"
    )


class Command(BaseCommand):
    help = "Retention of personal data: 'purge' removes what is past its period (rows stay for statistics)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="what", required=True)
        purge = sub.add_parser(
            "purge",
            help="Delete evidence photos and clear personal columns past their retention period.",
            description=(
                "Delete the evidence photos of notices, rejected violations and violations never decided "
                "past their retention period and clear the plate, vehicle, owner and address links of their "
                "rows, in batches, with one audit event per batch. Counts by region, article and day, and fines, "
                "are unchanged."
            ),
        )
        purge.add_argument("--dry-run", action="store_true", help="Only count what is due; change nothing.")
        purge.add_argument("--batch-size", type=int, default=None, help="Violations per transaction.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dry_run"]:
            self.stdout.write("Due for removal (dry run, nothing changed):")
            self.stdout.write("  " + _line(retention_due_counts()))
            return
        batch_size = options["batch_size"]
        if batch_size is not None and not 1 <= batch_size <= 10_000:  # noqa: PLR2004 - a sane bound
            raise CommandError("--batch-size must be between 1 and 10000")

        def on_batch(counts: RetentionCounts) -> None:
            self.stdout.write(f"  batch {counts.batches}: {_line(counts)}")

        total = retention_purge(batch_size=batch_size, on_batch=on_batch)
        self.stdout.write(f"Purged in {total.batches} batch(es): {_line(total)}")
