"""Real processes for end-to-end tests: a Celery worker on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection


def test_database_url() -> str:
    """The URL of the database pytest-django created, for child processes."""
    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or ""
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}/{conf['NAME']}"


@contextmanager
def celery_worker(*, queues: str, extra_env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CAKRA_DATA_DIR": str(settings.DATA_DIR),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log_path = settings.DATA_DIR / f"worker-{os.getpid()}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argument list
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                "cakra.config.celery",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                # A name of its own: two workers on one broker under the same
                # name (the default, celery@<host>) collide on the exclusive
                # remote-control queue, and the second dies with RESOURCE_LOCKED.
                "--hostname",
                f"e2e-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--loglevel",
                "INFO",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for[T](check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    msg = f"timed out after {timeout}s waiting for {what}"
    raise AssertionError(msg)
