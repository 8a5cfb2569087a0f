"""Shared fixtures. The database is SQLite by default and PostgreSQL when
DATABASE_URL is set (``make test`` runs both)."""

from __future__ import annotations

# The data dir of a test run (dev secrets, SQLite test database, evidence,
# broker, sink) is chosen in cakra.config.test_settings.

import pytest
from django.db import connection

from cakra.audit.triggers import audit_triggers_install, audit_triggers_remove

from tests.factories import (
    ApiKeyFactory,
    OfficerFactory,
    RegionFactory,
    VehicleFactory,
)


@pytest.fixture(autouse=True)
def _audit_triggers_allow_flush(request):
    """Transactional tests end by emptying every table, which the audit
    table's append-only triggers refuse: lift them for that flush only."""
    transactional = {"transactional_db", "live_server"} & set(request.fixturenames)
    if not transactional and not request.node.get_closest_marker("django_db", None):
        yield
        return
    marker = request.node.get_closest_marker("django_db")
    transactional = transactional or bool(marker and marker.kwargs.get("transaction"))
    if transactional:
        request.getfixturevalue("transactional_db")
        audit_triggers_install(connection)
    yield
    if transactional:
        audit_triggers_remove(connection)


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
