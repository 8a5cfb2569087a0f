"""``cakra bench --notices N``: run the whole pipeline under load; print one JSON line last.

The bench needs a database of its own, because it removes it afterwards:
``--create-database`` makes (and afterwards drops) the PostgreSQL database
that ``DATABASE_URL`` names, and refuses one that exists but was not made
by the bench; on SQLite, point ``CAKRA_DATA_DIR`` at a folder of its own
(``make bench-embedded`` does) and the bench deletes the database file and
the evidence it wrote. Only what carries the bench's marker is ever removed
(cakra.ops.bench.ownership). It refuses to run on a database that holds
any other region's data.

The plan is the enabled channels in order (WhatsApp, SMS, email by default
outside production): every notice goes to WhatsApp first, and some owners'
numbers make it fall back to SMS, then to email (cakra.ops.bench.channels.phone).
``--channel whatsapp|sms|email`` sends every notice through that one
channel alone, so its rate is measured against its ceiling at full load.

``--faults`` runs the pipeline with the scheduler and injects faults while
it runs (cakra.ops.bench.faults): pool processes of the worker killed, the
broker restarted once (``--no-faults-broker`` leaves it alone: the broker
is the machine's, shared with anything else running on it), the bench
database's connections terminated once. PostgreSQL + RabbitMQ, with
``--create-database`` only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from cakra.enforcement.models import Region
from cakra.ops.bench.channels import BENCH_CHANNELS
from cakra.ops.bench.config import REGION_CODE, BenchConfig
from cakra.ops.bench.faults import FaultPlan
from cakra.ops.bench.ownership import (
    BenchOwnershipError,
    bench_database_create,
    bench_database_drop,
    bench_files_claim,
    bench_files_remove,
)
from cakra.ops.bench.run import bench_run
from cakra.ops.fastpaths import fastpaths_measure

DEFAULT_FAULTS = FaultPlan()


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
        parser.add_argument(
            "--channel",
            choices=[channel.name for channel in BENCH_CHANNELS],
            default="",
            help="every notice through this one channel alone (default: the plan of the enabled channels)",
        )
        parser.add_argument(
            "--fast-paths",
            action="store_true",
            help="only measure each hand-written fast path against its reference (cakra.ops.fastpaths); "
            "--notices is then the number of messages each email stack sends",
        )
        faults = parser.add_argument_group("faults (PostgreSQL + RabbitMQ, with --create-database)")
        faults.add_argument("--faults", action="store_true", help="inject faults while the pipeline runs")
        faults.add_argument("--faults-seed", type=int, default=DEFAULT_FAULTS.seed, help="draws the fault schedule")
        faults.add_argument("--faults-kills", type=int, default=DEFAULT_FAULTS.kills, help="pool processes to kill")
        faults.add_argument(
            "--faults-interval",
            type=float,
            default=DEFAULT_FAULTS.kill_interval_seconds,
            help="mean seconds between two kills",
        )
        faults.add_argument(
            "--faults-broker",
            action=argparse.BooleanOptionalAction,
            default=DEFAULT_FAULTS.broker,
            help="restart RabbitMQ once (rabbitmqctl stop_app / start_app: every user of the broker sees it)",
        )
        faults.add_argument(
            "--faults-broker-down",
            type=float,
            default=DEFAULT_FAULTS.broker_down_seconds,
            help="seconds between stop_app and start_app",
        )
        faults.add_argument(
            "--faults-database",
            action=argparse.BooleanOptionalAction,
            default=DEFAULT_FAULTS.database,
            help="terminate every connection to the bench database once",
        )
        faults.add_argument(
            "--faults-lease",
            type=float,
            default=DEFAULT_FAULTS.lease_seconds,
            help="the sweeper's pending and sending leases for the run, in seconds",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            msg = "cakra bench is refused with CAKRA_ENV=production"
            raise CommandError(msg)
        if options["fast_paths"]:
            # Ratios taken in one run, each pair of stacks alternating; no pipeline.
            self.stdout.write(json.dumps(fastpaths_measure(messages=options["notices"])))
            return
        postgres = connection.vendor == "postgresql"
        sqlite_database = None if postgres else Path(str(connection.settings_dict["NAME"]))
        if options["create_database"] and not postgres:
            msg = "--create-database is for PostgreSQL; on SQLite set CAKRA_DATA_DIR to a folder of its own"
            raise CommandError(msg)
        faults = self._fault_plan(options, postgres=postgres)
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
            channels=(options["channel"],) if options["channel"] else (),
        )
        # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so the child
        # processes are stopped, a stopped broker started again and the bench
        # data removed on the way out.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            result = bench_run(config, log=self._log, faults=faults)
        finally:
            if not options["keep"]:
                self._remove_data(sqlite_database=sqlite_database, created=options["create_database"])
        self.stdout.write(json.dumps(result))

    def _fault_plan(self, options: dict[str, Any], *, postgres: bool) -> FaultPlan | None:
        if not options["faults"]:
            return None
        if not (postgres and options["create_database"]):
            msg = "--faults needs PostgreSQL and --create-database (it terminates the bench database's connections)"
            raise CommandError(msg)
        if not settings.CELERY_BROKER_URL.startswith(("amqp:", "amqps:", "pyamqp:")):
            msg = "--faults needs RabbitMQ (CELERY_BROKER_URL amqp://…)"
            raise CommandError(msg)
        if options["faults_broker"] and shutil.which("rabbitmqctl") is None:
            msg = "--faults-broker needs rabbitmqctl on PATH (or --no-faults-broker)"
            raise CommandError(msg)
        return FaultPlan(
            seed=options["faults_seed"],
            kills=options["faults_kills"],
            kill_interval_seconds=options["faults_interval"],
            broker=options["faults_broker"],
            broker_down_seconds=options["faults_broker_down"],
            database=options["faults_database"],
            lease_seconds=options["faults_lease"],
        )

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
