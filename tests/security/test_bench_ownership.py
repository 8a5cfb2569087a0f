"""Dangerous commands: ``cakra bench`` removes only the database and files it made."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import dj_database_url
import psycopg
import pytest
from psycopg import sql

from cakra.ops.bench.ownership import (
    BenchOwnershipError,
    bench_database_connections_terminate,
    bench_database_create,
    bench_database_drop,
)

POSTGRES_URL = os.environ.get("DATABASE_URL", "")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL.startswith(("postgres://", "postgresql://")), reason="PostgreSQL only (DATABASE_URL)"
)


def _bench(*, data_dir: Path, database_url: str, create_database: bool) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cakra.config.settings",
        "CAKRA_ENV": "dev",
        "CAKRA_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
    }
    args = [sys.executable, "-m", "cakra.cli", "bench", "--notices", "1", "--timeout", "30"]
    if create_database:
        args.append("--create-database")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


@pytest.fixture
def foreign_database():
    """A PostgreSQL database that is not the bench's: one table with one row in it."""
    base = dj_database_url.parse(POSTGRES_URL)
    name = f"{base['NAME']}_foreign_{uuid.uuid4().hex[:8]}"
    settings_dict = {**base, "NAME": name}
    admin = psycopg.connect(
        host=base["HOST"] or "127.0.0.1", port=base["PORT"] or 5432, user=base["USER"] or None, dbname="postgres"
    )
    admin.autocommit = True
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(
        host=base["HOST"] or "127.0.0.1", port=base["PORT"] or 5432, user=base["USER"] or None, dbname=name
    ) as db:
        db.execute("CREATE TABLE citizens_ledger (note text)")
        db.execute("INSERT INTO citizens_ledger VALUES ('someone else''s data')")
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    yield settings_dict, url
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


def _ledger(settings_dict) -> list[tuple[str]]:
    with psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"] or None,
        dbname=settings_dict["NAME"],
    ) as db:
        return db.execute("SELECT note FROM citizens_ledger").fetchall()


@needs_postgres
def test_bench_create_database_refuses_a_database_it_did_not_create(foreign_database, tmp_path):
    settings_dict, url = foreign_database

    finished = _bench(data_dir=tmp_path, database_url=url, create_database=True)

    assert finished.returncode != 0
    assert "was not created by cakra bench" in finished.stderr
    assert "nothing was dropped" in finished.stderr
    assert _ledger(settings_dict) == [("someone else's data",)]


@needs_postgres
def test_the_bench_drops_only_a_database_carrying_its_marker(foreign_database):
    settings_dict, _url = foreign_database
    with pytest.raises(BenchOwnershipError):
        bench_database_drop(settings_dict=settings_dict)
    assert _ledger(settings_dict) == [("someone else's data",)]

    own = {**settings_dict, "NAME": settings_dict["NAME"] + "_bench"}
    bench_database_create(settings_dict=own)
    bench_database_create(settings_dict=own)  # a marked leftover of an earlier run is made again
    bench_database_drop(settings_dict=own)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=own["HOST"] or "127.0.0.1", port=own["PORT"] or 5432, user=own["USER"] or None, dbname=own["NAME"]
        )


def _connect(settings_dict) -> psycopg.Connection:
    return psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"] or None,
        dbname=settings_dict["NAME"],
        autocommit=True,
    )


@needs_postgres
def test_the_bench_terminates_connections_of_its_own_database_only(foreign_database):
    """``--faults`` cuts every connection to the bench's database, never another's."""
    settings_dict, _url = foreign_database
    own = {**settings_dict, "NAME": settings_dict["NAME"] + "_bench"}
    bench_database_create(settings_dict=own)
    try:
        with _connect(own) as bench_side, _connect(settings_dict) as other_side:
            assert bench_database_connections_terminate(settings_dict=own) >= 1
            with pytest.raises(psycopg.OperationalError):
                bench_side.execute("SELECT 1")
            assert other_side.execute("SELECT note FROM citizens_ledger").fetchall() == [("someone else's data",)]

            with pytest.raises(BenchOwnershipError):
                bench_database_connections_terminate(settings_dict=settings_dict)
            assert other_side.execute("SELECT 1").fetchone() == (1,)
    finally:
        bench_database_drop(settings_dict=own)


def test_bench_refuses_an_existing_sqlite_database_and_evidence_it_did_not_write(tmp_path):
    database = tmp_path / "cakra.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE citizens_ledger (note text)")
        db.execute("INSERT INTO citizens_ledger VALUES ('someone else''s data')")
    db.close()
    evidence = tmp_path / "evidence" / "original" / "photo.jpg"
    evidence.parent.mkdir(parents=True)
    evidence.write_bytes(b"\xff\xd8\xff")

    finished = _bench(data_dir=tmp_path, database_url="", create_database=False)

    assert finished.returncode != 0
    assert "nothing was removed" in finished.stderr
    assert evidence.read_bytes() == b"\xff\xd8\xff"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT note FROM citizens_ledger").fetchall() == [("someone else's data",)]
    db.close()
