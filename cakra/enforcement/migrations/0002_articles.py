"""The fines of UU 22/2009 as data (domain.md); amounts are statutory maxima."""

import json
from pathlib import Path

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

DATA = Path(__file__).resolve().parent.parent / "data" / "articles.json"


def load_articles(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    article_model = apps.get_model("enforcement", "Article")
    for row in json.loads(DATA.read_text(encoding="utf-8")):
        article_model.objects.update_or_create(code=row["code"], defaults=row)


class Migration(migrations.Migration):
    dependencies = [("enforcement", "0001_initial")]
    operations = [migrations.RunPython(load_articles, migrations.RunPython.noop)]
