"""Database triggers that refuse UPDATE, DELETE and TRUNCATE on audit events.

They stop the application (or a careless operator) from rewriting history;
someone holding DDL rights can drop them, which the hash chain then exposes.
Production also grants the application role INSERT/SELECT only on the table
(docs/operations.md).
"""

from __future__ import annotations

from typing import Any

SQL: dict[str, dict[str, list[str]]] = {
    "sqlite": {
        "install": [
            (
                "CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_auditevent "
                "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
            ),
            (
                "CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_auditevent "
                "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
            ),
        ],
        "remove": ["DROP TRIGGER IF EXISTS audit_event_no_update", "DROP TRIGGER IF EXISTS audit_event_no_delete"],
    },
    "postgresql": {
        "install": [
            (
                "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$"
            ),
            "DROP TRIGGER IF EXISTS audit_event_no_change ON audit_auditevent",
            (
                "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_auditevent "
                "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
            ),
            "DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent",
            (
                "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
            ),
        ],
        "remove": [
            "DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent",
            "DROP TRIGGER IF EXISTS audit_event_no_change ON audit_auditevent",
            "DROP FUNCTION IF EXISTS audit_event_append_only()",
        ],
    },
}


def _execute(connection: Any, which: str) -> None:
    statements = SQL.get(connection.vendor, {}).get(which, [])
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def audit_triggers_install(connection: Any) -> None:
    _execute(connection, "install")


def audit_triggers_remove(connection: Any) -> None:
    """Only for test teardown (flushing the database) and deliberate migrations."""
    _execute(connection, "remove")
