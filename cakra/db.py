"""Database helpers the ORM lacks, shared by services.

:func:`update_returning_pks` is a conditional ``UPDATE`` that also says
*which* rows it changed, in one statement (``UPDATE … RETURNING``, on
PostgreSQL and on SQLite ≥ 3.35). Batch services need that: a claim of a
hundred deliveries must know which of them it won, and reading the rows
again afterwards would be a second statement and a race. Django's
``QuerySet.update`` returns only a count.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.sql import UpdateQuery


def update_returning_pks[M: Model](queryset: QuerySet[M], **changes: Any) -> list[Any]:
    """``queryset.update(**changes)``, returning the primary keys of the rows changed.

    The statement is the one Django builds for ``update()`` (filters across
    relations become a ``pk IN (subquery)``, as there) with ``RETURNING`` of
    the primary key appended. UUID keys come back as :class:`uuid.UUID` on
    every backend. An empty queryset costs no statement.
    """
    model = queryset.model
    pk = model._meta.pk  # noqa: SLF001 - Django's public model metadata
    assert pk is not None  # noqa: S101 - every concrete model has one
    query = queryset.query.chain(UpdateQuery)
    assert isinstance(query, UpdateQuery)  # noqa: S101 - chain(klass) returns that class
    query.add_update_values(changes)
    if query.is_empty():
        return []
    compiler = query.get_compiler(queryset.db)
    compiler.pre_sql_setup()
    sql, params = compiler.as_sql()
    if not sql:
        return []
    connection = connections[queryset.db]
    column = connection.ops.quote_name(pk.column or pk.name)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {column}", params)
        values = [row[0] for row in cursor.fetchall()]
    if pk.get_internal_type() == "UUIDField":
        return [value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)) for value in values]
    return values
