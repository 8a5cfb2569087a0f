"""The Celery application. Tasks carry ids only; the database is the truth."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cakra.config.settings")

app = Celery("cakra")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
