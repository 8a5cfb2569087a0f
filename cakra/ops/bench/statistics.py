"""Planner statistics during the run, as autovacuum keeps them in production."""

from __future__ import annotations

from django.db import connection


def autoanalyze_as_autovacuum() -> list[str]:
    """ANALYZE every table of the bench's database that autovacuum would
    analyze now (PostgreSQL only); return their names.

    A production server runs autovacuum, which analyzes a table once the
    rows changed since its last analysis exceed ``autovacuum_analyze_threshold``
    plus ``autovacuum_analyze_scale_factor`` of its size (50 + 10% by
    default). The development servers of this machine class run with
    autovacuum off, so the bench applies the same rule itself, with the
    server's own settings, each time it polls for progress.

    Without statistics the planner misjudges the pipeline's growing tables:
    statistics taken while they were empty made every foreign-key check scan
    them whole, and none at all made the receipt webhook find its deliveries
    by a scan of the delivery table (docs/performance.md, "What was changed
    because of measurements").
    """
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.relid::regclass::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8 "
            "+ current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)"
        )
        tables = [row[0] for row in cursor.fetchall()]
        for table in tables:  # names as PostgreSQL quotes them (regclass)
            cursor.execute(f"ANALYZE {table}")
    return tables
