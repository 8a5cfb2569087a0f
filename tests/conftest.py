"""Shared fixtures. The database is SQLite by default and PostgreSQL when
DATABASE_URL is set (``make test`` runs both)."""

from __future__ import annotations

# The data dir of a test run (dev secrets, SQLite test database, evidence,
# broker, sink) is chosen in cakra.config.test_settings.
import importlib
from collections.abc import Iterator

import pytest
from django.apps import apps
from django.db import connection

from cakra.audit.services import audit_chain_heads_ensure
from cakra.audit.triggers import audit_triggers_install, audit_triggers_remove
from cakra.config.celery import app as celery_app
from cakra.enforcement.models import Article
from tests.clock import ManualClock, frozen_clock
from tests.factories import (
    ApiKeyFactory,
    OfficerFactory,
    RegionFactory,
    VehicleFactory,
)

DB_FIXTURES = {"db", "transactional_db", "live_server"}


def _reference_data_ensure() -> None:
    """Rows the migrations seed (articles, the audit chain head). A
    transactional test ends by emptying every table, so put them back."""
    load_articles = importlib.import_module("cakra.enforcement.migrations.0002_articles").load_articles
    if not Article.objects.exists():
        load_articles(apps, None)
    audit_chain_heads_ensure()


@pytest.fixture(autouse=True)
def _database_baseline(request):
    """Every database test starts with the reference data and the audit
    table's append-only triggers; a transactional test lifts the triggers
    again at the end, for the flush that empties every table."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool({"transactional_db", "live_server"} & set(request.fixturenames)) or bool(
        marker and marker.kwargs.get("transaction")
    )
    uses_db = transactional or marker is not None or bool(DB_FIXTURES & set(request.fixturenames))
    if not uses_db:
        yield
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    audit_triggers_install(connection)
    _reference_data_ensure()
    yield
    if transactional:
        audit_triggers_remove(connection)


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    """Time windows (rate limits, quotas and leases, provider health, the
    sweeper's leases) stand still for the test until it moves them:
    ``clock.advance(1.05)`` instead of sleeping through the window."""
    with frozen_clock() as manual:
        yield manual


@pytest.fixture
def region(db):
    return RegionFactory(code="METRO", name="Polda Metro Jaya", plate_prefixes=["B"])


@pytest.fixture
def other_region(db):
    return RegionFactory(code="JABAR", name="Polda Jawa Barat", plate_prefixes=["D"])


@pytest.fixture
def vehicle(region):
    return VehicleFactory(plate="B 1234 XYZ")


@pytest.fixture
def officer(region):
    return OfficerFactory(region=region)


@pytest.fixture
def api_key(region):
    """(ApiKey row, raw token)."""
    return ApiKeyFactory.with_token(region=region)


@pytest.fixture
def pre_validated_key(region):
    return ApiKeyFactory.with_token(region=region, pre_validated=True)


@pytest.fixture
def celery_eager():
    """Run tasks in-process, as a worker would, and raise their errors."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous
