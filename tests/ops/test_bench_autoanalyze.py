"""The bench analyzes tables as autovacuum would (cakra.ops.bench.statistics.autoanalyze_as_autovacuum)."""

from __future__ import annotations

import pytest
from django.db import connection

from cakra.ops.bench.statistics import autoanalyze_as_autovacuum
from cakra.registry.models import Owner

pytestmark = pytest.mark.django_db(transaction=True)


def _analyze_count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = %s", [table])
        return int(cursor.fetchone()[0])


def test_a_table_changed_past_autovacuums_threshold_is_analyzed_once() -> None:
    if connection.vendor != "postgresql":
        assert autoanalyze_as_autovacuum() == []  # nothing to do elsewhere
        return
    table = Owner._meta.db_table
    before = _analyze_count(table)
    # More than autovacuum_analyze_threshold (50) rows in an unanalyzed table.
    Owner.objects.bulk_create([Owner(name=f"Pemilik {i}", nik="", nik_hash="") for i in range(60)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts, visible now

    assert table in autoanalyze_as_autovacuum()
    assert _analyze_count(table) == before + 1
    assert table not in autoanalyze_as_autovacuum()  # analyzed: below the threshold again
