"""``cakra keys status | reencrypt``: finishing a field-encryption key rotation.

    cakra keys status                       # values per key id, per column
    cakra keys reencrypt [--batch-size N] [--dry-run]

After a new key is appended to ``CAKRA_FIELD_KEYS`` (and made active) on
every process, ``reencrypt`` moves every sealed value (personal data, TOTP
seeds) to it, on the live system; ``status`` then shows the old key id
protecting nothing, and only then may it leave the ring. Exit status 1 when
some values did not decrypt (they are left as they are, and named by row id
in the log).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from cakra.security.columns import EncryptedColumn
from cakra.security.crypto import key_ring
from cakra.security.selectors import encrypted_values_status
from cakra.security.services import DEFAULT_BATCH_SIZE, encrypted_values_reencrypt


class _ProgressStream:
    """tqdm writes carriage-return updates; Django's OutputWrapper would end each with a newline."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self._wrapper = wrapper

    def write(self, text: str) -> None:
        self._wrapper.write(text, style_func=lambda line: line, ending="")

    def flush(self) -> None:
        self._wrapper.flush()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = "must be at least 1"
        raise ValueError(msg)
    return value


class Command(BaseCommand):
    help = "Field-encryption keys: which key protects how many values; move values to the active key."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{status,reencrypt}")
        sub.add_parser("status", help="How many values each key id protects, per column.")
        reencrypt = sub.add_parser("reencrypt", help="Re-seal every value not under the active key (resumable).")
        reencrypt.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, metavar="N")
        reencrypt.add_argument("--dry-run", action="store_true", help="count what would be re-sealed, write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        active = key_ring().active
        if options["action"] == "status":
            for usage in encrypted_values_status():
                marker = " (active)" if usage.key_id == active else ""
                self.stdout.write(f"{usage.column}\t{usage.key_id}{marker}\t{usage.values}")
            return
        pending = sum(usage.values for usage in encrypted_values_status() if usage.key_id != active)
        progress = tqdm(
            total=pending,
            unit="value",
            file=_ProgressStream(self.stderr) if self.stderr.isatty() else sys.stderr,
            disable=not self.stderr.isatty(),
            leave=False,
        )

        def on_batch(column: EncryptedColumn, count: int) -> None:
            progress.set_description(column.label)
            progress.update(count)

        try:
            summary = encrypted_values_reencrypt(
                batch_size=options["batch_size"], dry_run=options["dry_run"], on_batch=on_batch
            )
        finally:
            progress.close()
        verb = "would re-seal" if options["dry_run"] else "re-sealed"
        self.stdout.write(
            f"{verb} {summary.reencrypted} values under key {active}; "
            f"{summary.changed_meanwhile} changed meanwhile; {summary.failed} did not decrypt"
        )
        if summary.failed:
            msg = f"{summary.failed} values did not decrypt (see the log for their row ids); they were left as they are"
            raise CommandError(msg)
