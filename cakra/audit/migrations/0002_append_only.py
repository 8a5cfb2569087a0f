"""Make audit events append-only in the database too, and create the chain head."""

from django.apps.registry import Apps
from django.conf import settings
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from cakra.audit.triggers import audit_triggers_install, audit_triggers_remove


def install(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    audit_triggers_install(schema_editor.connection)
    head_model = apps.get_model("audit", "AuditChainHead")
    for chain in range(settings.CAKRA_AUDIT_CHAINS):
        head_model.objects.get_or_create(chain=chain)


def remove(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    audit_triggers_remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
