"""``cakra bench --notices N``: run the whole pipeline under load; print one JSON line last.

The bench needs a database of its own, because it removes it afterwards:
``--create-database`` makes (and afterwards drops) the PostgreSQL database
that ``DATABASE_URL`` names, and refuses one that exists but was not made
by the bench; on SQLite, point ``CAKRA_DATA_DIR`` at a folder of its own
(``make bench-embedded`` does) and the bench deletes the database file and
the evidence it wrote. Only what carries the bench's marker is ever removed
(cakra.ops.bench.ownership). It refuses to run on a database that holds
any other region's data.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from cakra.enforcement.models import Region
from cakra.ops.bench.config import REGION_CODE, BenchConfig
from cakra.ops.bench.ownership import (
    BenchOwnershipError,
    bench_database_create,
    bench_database_drop,
    bench_files_claim,
    bench_files_remove,
)
from cakra.ops.bench.run import bench_run


class Command(BaseCommand):
    help = "Benchmark intake → notice → delivery end to end; prints one JSON line last."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--notices", type=int, required=True)
        parser.add_argument("--batch-size", type=int, default=100)
        parser.add_argument("--intake-threads", type=int, default=2)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=4)
        parser.add_argument("--timeout", type=float, default=0.0, help="seconds; 0 scales with --notices")
        parser.add_argument("--create-database", action="store_true", help="PostgreSQL: create, then drop")
        parser.add_argument("--keep", action="store_true", help="keep the bench data and logs afterwards")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            msg = "cakra bench is refused with CAKRA_ENV=production"
            raise CommandError(msg)
        postgres = connection.vendor == "postgresql"
        sqlite_database = None if postgres else Path(str(connection.settings_dict["NAME"]))
        if options["create_database"] and not postgres:
            msg = "--create-database is for PostgreSQL; on SQLite set CAKRA_DATA_DIR to a folder of its own"
            raise CommandError(msg)
        try:
            # Claimed before anything is created or changed: a refusal leaves everything as it was.
            bench_files_claim(sqlite_database=sqlite_database, evidence_root=Path(settings.EVIDENCE_ROOT))
            if options["create_database"]:
                bench_database_create(settings_dict=dict(connection.settings_dict))
        except BenchOwnershipError as exc:
            raise CommandError(str(exc)) from None
        call_command("migrate", verbosity=0, interactive=False)
        if Region.objects.exclude(code=REGION_CODE).exists():
            msg = "this database holds other data; run the bench on a database of its own (see make bench)"
            raise CommandError(msg)
        config = BenchConfig(
            notices=options["notices"],
            batch_size=options["batch_size"],
            intake_threads=options["intake_threads"],
            web_workers=options["web_workers"],
            worker_concurrency=options["worker_concurrency"],
            timeout_seconds=options["timeout"],
            keep=options["keep"],
        )
        # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so the child
        # processes are stopped and the bench data removed on the way out.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            result = bench_run(config, log=self._log)
        finally:
            if not options["keep"]:
                self._remove_data(sqlite_database=sqlite_database, created=options["create_database"])
        self.stdout.write(json.dumps(result))

    def _log(self, text: str) -> None:
        self.stderr.write(text)
        self.stderr.flush()

    def _remove_data(self, *, sqlite_database: Path | None, created: bool) -> None:
        """Only what this run's markers prove the bench made (cakra.ops.bench.ownership)."""
        settings_dict = dict(connection.settings_dict)
        connection.close()
        bench_files_remove(sqlite_database=sqlite_database, evidence_root=Path(settings.EVIDENCE_ROOT))
        if created:
            bench_database_drop(settings_dict=settings_dict)
