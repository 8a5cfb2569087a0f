"""What the bench may remove: only what it made, proven by a marker it left.

``cakra bench`` removes its database and evidence afterwards. A mistyped
``DATABASE_URL`` or ``CAKRA_DATA_DIR`` must not turn that into the loss of
real notices, so nothing is dropped or deleted on the strength of a name:

- PostgreSQL (``--create-database``): the bench creates the database and
  marks it with ``COMMENT ON DATABASE ... IS 'cakra_bench_owned'``; it drops
  a database only if it carries that comment. An existing database without
  it is refused, and nothing is dropped.
- Faults (``--faults``) terminate the connections of a PostgreSQL database
  only if it carries that comment, and only those of that database.
- SQLite and evidence files: a marker file beside the database file and one
  in the evidence folder, written when the bench finds them absent or empty;
  an existing database file or non-empty evidence folder without its marker
  is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

BENCH_MARKER = "cakra_bench_owned"
_SQLITE_SUFFIXES = ("", "-wal", "-shm")


class BenchOwnershipError(Exception):
    """The bench was pointed at data it did not create; nothing was removed."""


def _admin_connection(settings_dict: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=settings_dict.get("HOST") or "127.0.0.1",
        port=settings_dict.get("PORT") or 5432,
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def _database_marker(admin: psycopg.Connection[Any], database: str) -> tuple[bool, bool]:
    """(exists, carries the bench's marker)."""
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [database]
    ).fetchone()
    if row is None:
        return False, False
    return True, row[0] == BENCH_MARKER


def bench_database_create(*, settings_dict: dict[str, Any]) -> None:
    """Create the bench's PostgreSQL database, marked as the bench's.

    A marked database left by an earlier run is dropped and made again; an
    unmarked one holds someone else's data and is refused.
    """
    database = str(settings_dict["NAME"])
    with _admin_connection(settings_dict) as admin:
        exists, marked = _database_marker(admin, database)
        if exists and not marked:
            msg = (
                f"database {database!r} already exists and was not created by cakra bench; "
                "nothing was dropped. Point DATABASE_URL at a database name of its own (see make bench)."
            )
            raise BenchOwnershipError(msg)
        name = sql.Identifier(database)
        if exists:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(name, sql.Literal(BENCH_MARKER)))


def bench_database_drop(*, settings_dict: dict[str, Any]) -> None:
    """Drop the bench's PostgreSQL database, if it exists and carries the bench's marker."""
    database = str(settings_dict["NAME"])
    with _admin_connection(settings_dict) as admin:
        exists, marked = _database_marker(admin, database)
        if not exists:
            return
        if not marked:
            msg = f"database {database!r} was not created by cakra bench; it was not dropped"
            raise BenchOwnershipError(msg)
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))


def bench_database_connections_terminate(*, settings_dict: dict[str, Any]) -> int:
    """Terminate every connection to the bench's PostgreSQL database (a fault
    the bench injects); how many there were. Refused for a database without
    the bench's marker; connections to any other database are never touched."""
    database = str(settings_dict["NAME"])
    with _admin_connection(settings_dict) as admin:
        _, marked = _database_marker(admin, database)
        if not marked:
            msg = f"database {database!r} was not created by cakra bench; its connections were left alone"
            raise BenchOwnershipError(msg)
        row = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        ).fetchone()
    return int(row[0]) if row else 0


def _marker_file(path: Path) -> Path:
    return path.with_name(path.name + "." + BENCH_MARKER)


def bench_files_claim(*, sqlite_database: Path | None, evidence_root: Path) -> None:
    """Mark the SQLite database file (when there is one) and the evidence folder
    as the bench's, refusing either if it already holds data without the marker."""
    evidence_marker = evidence_root / BENCH_MARKER
    if evidence_root.is_dir() and any(evidence_root.iterdir()) and not evidence_marker.exists():
        msg = (
            f"the evidence folder {evidence_root} holds files cakra bench did not write; nothing was removed. "
            "Set CAKRA_DATA_DIR to a folder of its own (see make bench-embedded)."
        )
        raise BenchOwnershipError(msg)
    if sqlite_database is not None:
        if sqlite_database.exists() and not _marker_file(sqlite_database).exists():
            msg = (
                f"the database {sqlite_database} exists and was not created by cakra bench; nothing was removed. "
                "Set CAKRA_DATA_DIR to a folder of its own (see make bench-embedded)."
            )
            raise BenchOwnershipError(msg)
        sqlite_database.parent.mkdir(parents=True, exist_ok=True)
        _marker_file(sqlite_database).touch()
    evidence_root.mkdir(parents=True, exist_ok=True)
    evidence_marker.touch()


def bench_files_remove(*, sqlite_database: Path | None, evidence_root: Path) -> None:
    """Remove the SQLite database and the evidence folder, each only if it carries the bench's marker."""
    if (evidence_root / BENCH_MARKER).exists():
        shutil.rmtree(evidence_root, ignore_errors=True)
    if sqlite_database is not None and _marker_file(sqlite_database).exists():
        for suffix in _SQLITE_SUFFIXES:
            Path(f"{sqlite_database}{suffix}").unlink(missing_ok=True)
        _marker_file(sqlite_database).unlink(missing_ok=True)
