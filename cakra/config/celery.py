"""The Celery application. Tasks carry ids only; the database is the truth."""

from __future__ import annotations

import os
from typing import Any

import django
from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun, worker_init
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

from cakra.config.production import deploy_checks_enforce

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cakra.config.settings")

app = Celery("cakra")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _database_connections_checked(*, task: Any = None, **kwargs: Any) -> None:
    """Each task is a unit of work like a web request: drop connections that
    broke (a database restart, a dropped connection) or outlived CONN_MAX_AGE,
    as Django does around every request. Workers keep healthy connections
    (CELERY_DB_REUSE_MAX) instead of opening one per task, so without this a
    connection killed under a worker would fail every task that follows."""
    if task is None or task.request.is_eager:
        # Run in the caller's process (tests, CELERY_TASK_ALWAYS_EAGER): the
        # caller's connection and transaction are not the task's to close.
        return
    close_old_connections()


@worker_init.connect
@beat_init.connect
def _production_deploy_checks(**kwargs: Any) -> None:
    """A production worker or scheduler starts only if the deployment checks
    are clean, as the web process does (cakra/config/production.py).

    SystemExit, not the ImproperlyConfigured itself: Celery logs and swallows
    what a signal receiver raises, and the worker would start regardless.
    """
    if not settings.PRODUCTION:
        return
    django.setup()  # the checks need the apps; Celery's own set-up may run after this receiver
    try:
        deploy_checks_enforce()
    except ImproperlyConfigured as exc:
        raise SystemExit(str(exc)) from None
