"""``cakra bench --notices N``: run the whole pipeline under load; print one JSON line last.

The bench needs a database of its own, because it removes it afterwards:
``--create-database`` makes (and afterwards drops) the PostgreSQL database
that ``DATABASE_URL`` names; on SQLite, point ``CAKRA_DATA_DIR`` at a folder
of its own (``make bench-embedded`` does) and the bench deletes the database
file and the evidence it wrote. It refuses to run on a database that holds
any other region's data.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from cakra.ops.bench import REGION_CODE, BenchConfig, bench_run


def _postgres_admin(database: str, statement: str) -> None:
    conf = connection.settings_dict
    with psycopg.connect(
        host=conf.get("HOST") or "127.0.0.1",
        port=conf.get("PORT") or 5432,
        user=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if statement == "create" and not exists:
            admin.execute(f'CREATE DATABASE "{database}"')
        elif statement == "drop" and exists:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


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
        database = str(connection.settings_dict["NAME"])
        if options["create_database"]:
            if not postgres:
                msg = "--create-database is for PostgreSQL; on SQLite set CAKRA_DATA_DIR to a folder of its own"
                raise CommandError(msg)
            _postgres_admin(database, "drop")
            _postgres_admin(database, "create")
        call_command("migrate", verbosity=0, interactive=False)
        from cakra.enforcement.models import Region

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
                self._remove_data(postgres=postgres, database=database, created=options["create_database"])
        self.stdout.write(json.dumps(result))

    def _log(self, text: str) -> None:
        self.stderr.write(text)
        self.stderr.flush()

    def _remove_data(self, *, postgres: bool, database: str, created: bool) -> None:
        connection.close()
        shutil.rmtree(settings.EVIDENCE_ROOT, ignore_errors=True)
        if postgres and created:
            _postgres_admin(database, "drop")
        elif not postgres:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
