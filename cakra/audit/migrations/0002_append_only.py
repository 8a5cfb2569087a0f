"""Make audit events append-only in the database too, and create the chain head.

The triggers stop accidental or application-level UPDATE/DELETE; someone with
DDL rights can drop them, which is why every event is also hash-chained.
"""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

SQLITE_UP = [
    (
        "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_auditevent "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    ),
    (
        "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_auditevent "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    ),
]
SQLITE_DOWN = ["DROP TRIGGER audit_event_no_update", "DROP TRIGGER audit_event_no_delete"]
POSTGRES_UP = [
    (
        "CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$"
    ),
    (
        "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_auditevent "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    ),
    (
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
    ),
]
POSTGRES_DOWN = [
    "DROP TRIGGER audit_event_no_truncate ON audit_auditevent",
    "DROP TRIGGER audit_event_no_change ON audit_auditevent",
    "DROP FUNCTION audit_event_append_only()",
]


def _run(schema_editor: BaseDatabaseSchemaEditor, statements: dict[str, list[str]]) -> None:
    for statement in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def install(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run(schema_editor, {"sqlite": SQLITE_UP, "postgresql": POSTGRES_UP})
    apps.get_model("audit", "AuditChainHead").objects.get_or_create(name="main")


def remove(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run(schema_editor, {"sqlite": SQLITE_DOWN, "postgresql": POSTGRES_DOWN})


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
