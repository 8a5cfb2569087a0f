"""``cakra import violations FILE.csv --api-key-prefix PREFIX``: bulk intake from a CSV file.

For captures that arrive as files rather than over the API (a back office's
export, a backlog after an outage). Every row goes through the same checks
and the same service as ``POST /api/v1/violations/batch``, in the name of an
active API key of the region, so pre-validation and idempotency follow the
key exactly as they do on the API.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from cakra.api.csvimport import (
    CSV_COLUMNS,
    CsvFileError,
    ImportSummary,
    RowReject,
    printable,
    violation_import_csv,
)
from cakra.api.intake import CHUNK_SIZE
from cakra.api.models import ApiKey
from cakra.api.selectors import apikey_get_active
from cakra.security.csvsafe import csv_writer_safe

# ruff: noqa: N999 - the command is "cakra import"; Django names commands after their module

SHOWN_REJECTS = 100
REJECT_COLUMNS = ("line", "capture_id", "code", "field", "reason")

EPILOG = f"""\
CSV columns (a header row names them, in any order):
  {", ".join(CSV_COLUMNS[:6])},
  {", ".join(CSV_COLUMNS[6:])}
captured_at is ISO 8601 with a UTC offset; latitude, longitude and the speeds
may be empty. evidence is 1-4 image paths separated by ';', each optionally
prefixed by its kind (vehicle:, plate:, context:); relative paths resolve
against the CSV's folder and must stay inside --evidence-root.

Exit status: 0 when the file was processed, even if rows were rejected (the
summary and --rejects list them); 1 when the file cannot be imported at all
(missing or unreadable file, not UTF-8, wrong header, unknown or revoked key)
or the import stopped on a database or storage failure. Importing a file
again is safe: rows already stored come back as replays.
"""


class _ProgressStream:
    """tqdm writes carriage-return updates; Django's OutputWrapper would end each with a newline."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self._wrapper = wrapper

    def write(self, text: str) -> None:
        self._wrapper.write(text, style_func=lambda line: line, ending="")

    def flush(self) -> None:
        self._wrapper.flush()


class Command(BaseCommand):
    help = "Import data in bulk: 'violations' reads camera captures from a CSV file."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="what", required=True)
        violations = sub.add_parser(
            "violations",
            help="Import camera captures from a CSV file, by the rules of the API.",
            description=(
                "Import camera captures from a CSV file in the name of an active API key: each row is "
                "checked, replayed, refused or pre-validated exactly as POST /api/v1/violations/batch "
                "would do it. Prints a summary with every rejected row."
            ),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        violations.add_argument("file", type=Path, help="The CSV file (UTF-8).")
        violations.add_argument(
            "--api-key-prefix",
            required=True,
            help="Prefix of the active API key to import as (see 'cakra apikey list'): its region owns the "
            "captures and a pre-validated key issues notices at once.",
        )
        violations.add_argument("--region", default="", help="Refuse to run unless the key belongs to this region.")
        violations.add_argument(
            "--evidence-root",
            type=Path,
            default=None,
            help="Folder that every evidence path must stay inside (default: the CSV's folder).",
        )
        violations.add_argument("--rejects", type=Path, default=None, help="Also write the rejected rows to this CSV.")
        violations.add_argument(
            "--chunk-size", type=int, default=CHUNK_SIZE, help=f"Rows per transaction (default {CHUNK_SIZE})."
        )
        violations.add_argument("--no-progress", action="store_true", help="No progress bar (never shown off a TTY).")

    def handle(self, *args: Any, **options: Any) -> None:
        key = self._key(prefix=options["api_key_prefix"], region=options["region"])
        if not 1 <= options["chunk_size"] <= CHUNK_SIZE * 10:
            raise CommandError(f"--chunk-size must be between 1 and {CHUNK_SIZE * 10}")
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        rejects_path: Path | None = options["rejects"]
        if rejects_path is not None and rejects_path.resolve() == path.resolve():
            raise CommandError("--rejects must not be the file being imported")
        shown: list[RowReject] = []
        with self._rejects_writer(rejects_path) as write_reject:

            def on_reject(reject: RowReject) -> None:
                if len(shown) < SHOWN_REJECTS:
                    shown.append(reject)
                write_reject(reject)

            summary = self._import(
                key=key, path=path, options=options, on_reject=on_reject, progress_enabled=self._progress(options)
            )
        self._summary(path=path, key=key, summary=summary, shown=shown)
        if rejects_path is not None:
            self.stdout.write(f"Rejected rows written to {rejects_path}.")

    def _key(self, *, prefix: str, region: str) -> ApiKey:
        # Accept the visible part of a token too: "cakra_<prefix>".
        prefix = prefix.strip().removeprefix("cakra_").split("_", 1)[0]
        key = apikey_get_active(prefix=prefix)
        if key is None:
            raise CommandError(f"no active API key with prefix {printable(prefix)!r}")
        if region and region != key.region.code:
            raise CommandError(f"API key {key.prefix} belongs to region {key.region.code}, not {printable(region)}")
        return key

    def _progress(self, options: dict[str, Any]) -> bool:
        return not options["no_progress"] and self.stderr.isatty()

    @contextmanager
    def _rejects_writer(self, path: Path | None) -> Iterator[Callable[[RowReject], None]]:
        if path is None:
            yield lambda _: None
            return
        try:
            handle = path.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
        with handle:
            # Officers open this file in a spreadsheet, and its capture ids
            # come from the file being imported: no cell may run as a formula.
            writer = csv_writer_safe(handle)
            writer.writerow(REJECT_COLUMNS)

            def write(reject: RowReject) -> None:
                writer.writerow([reject.line, reject.capture_id, reject.code, reject.field, reject.reason])

            yield write

    def _import(
        self,
        *,
        key: ApiKey,
        path: Path,
        options: dict[str, Any],
        on_reject: Callable[[RowReject], None],
        progress_enabled: bool,
    ) -> ImportSummary:
        progress = tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=printable(path.name, limit=30),
            file=_ProgressStream(self.stderr) if progress_enabled else sys.stderr,
            disable=not progress_enabled,
            leave=False,
        )

        def on_bytes(count: int) -> None:
            progress.update(count)

        def on_chunk(summary: ImportSummary) -> None:
            progress.set_postfix(created=summary.created, replayed=summary.replayed, rejected=summary.rejected)

        try:
            return violation_import_csv(
                api_key=key,
                path=path,
                evidence_root=options["evidence_root"],
                on_reject=on_reject,
                on_bytes=on_bytes,
                on_chunk=on_chunk,
                chunk_size=options["chunk_size"],
            )
        except CsvFileError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        except Exception as exc:
            raise CommandError(
                f"the import stopped ({type(exc).__name__}); rows before the failure are stored. "
                "Run the same import again: stored rows come back as replays."
            ) from exc
        finally:
            progress.close()

    def _summary(self, *, path: Path, key: ApiKey, summary: ImportSummary, shown: list[RowReject]) -> None:
        self.stdout.write(f"Imported {path} as API key {key.prefix} (region {key.region.code}).")
        self.stdout.write(f"  rows:     {summary.rows}")
        self.stdout.write(f"  created:  {summary.created}")
        self.stdout.write(f"  replayed: {summary.replayed}")
        self.stdout.write(f"  rejected: {summary.rejected}")
        if not shown:
            return
        self.stdout.write("Rejected rows (line, capture id, reason):")
        for reject in shown:
            self.stdout.write(
                f"  line {reject.line}  {reject.capture_id or '-'}  {printable(reject.reason, limit=200)}"
            )
        if summary.rejected > len(shown):
            self.stdout.write(f"  ... and {summary.rejected - len(shown)} more (write them all with --rejects FILE).")
