"""``cakra run``: the whole system in one terminal, for the embedded default.

Starts the web server, the Celery worker, the Celery scheduler and the
provider simulators as child processes, prefixes their output, and stops all
of them on Ctrl-C (or when any one of them dies, so a half-running system is
never mistaken for a working one). Production runs the same commands as
separate services instead (docs/operations.md).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from cakra.demo.seed import DemoCredentials, demo_summary
from cakra.ops.processes import process_groups_stop

WORKER_QUEUES = "whatsapp,sms,email,evidence,celery"
STOP_GRACE_SECONDS = 20


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def process_commands(*, port: int, host: str) -> dict[str, list[str]]:
    python = sys.executable
    celery = [python, "-m", "celery", "--app", "cakra.config.celery"]
    return {
        "web": [
            python,
            "-m",
            "gunicorn",
            "--config",
            "python:cakra.config.gunicorn",
            "cakra.config.wsgi:application",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
        ],
        "worker": [*celery, "worker", "--queues", WORKER_QUEUES, "--concurrency", "2", "--loglevel", "INFO"],
        "scheduler": [*celery, "beat", "--loglevel", "INFO", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME],
        "sink": [python, "-m", "cakra.cli", "sink"],
        "whatsapp": [python, "-m", "cakra.cli", "whatsapp-sim"],
    }


class Command(BaseCommand):
    help = "Run web, worker, scheduler and simulators together (embedded default); Ctrl-C stops all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args: Any, **options: Any) -> None:
        commands = process_commands(port=options["port"], host=options["host"])
        children: dict[str, subprocess.Popen[bytes]] = {}
        selector = selectors.DefaultSelector()
        width = max(len(name) for name in commands)
        # PORT tells the children (the sink's receipt webhook, portal links) where the web server is.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PORT": str(options["port"])}
        for name, command in commands.items():
            child = subprocess.Popen(  # noqa: S603 - fixed argument lists, no shell
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            children[name] = child
            assert child.stdout is not None  # noqa: S101 - PIPE was requested
            selector.register(child.stdout, selectors.EVENT_READ, name)

        stopping = False
        announced = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for key, _ in selector.select(timeout=0.5):
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if line:
                        self.stdout.write(f"{key.data:<{width}} | {line.decode(errors='replace').rstrip()}")
                if not announced and _accepts(options["host"], options["port"]):
                    announced = True
                    self._announce()
                dead = [name for name, child in children.items() if child.poll() is not None]
                if dead:
                    self.stderr.write(f"{', '.join(dead)} stopped; stopping everything")
                    break
        finally:
            self.stdout.write("stopping all processes (the worker finishes the tasks in hand)…")
            self._stop_all(children)

    def _announce(self) -> None:
        credentials = None if settings.PRODUCTION else DemoCredentials.load()
        if credentials is not None:
            self.stdout.write(demo_summary(credentials))
        self.stdout.write("Cakra is running. Ctrl-C stops everything.")

    def _stop_all(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        process_groups_stop(children.values(), grace_seconds=STOP_GRACE_SECONDS)
        self.stdout.write("all processes stopped")
