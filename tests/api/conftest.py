"""Fixtures of the API tests (helpers live in tests/api/helpers.py)."""

from __future__ import annotations

import pytest

from cakra.config.celery import app as celery_app


@pytest.fixture
def celery_eager():
    """Run tasks in-process, as a worker would, and raise their errors."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous
