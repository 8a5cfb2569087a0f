"""Database helpers the ORM lacks, shared by services.

:func:`update_returning_pks` is a conditional ``UPDATE`` that also says
*which* rows it changed, in one statement (``UPDATE … RETURNING``, on
PostgreSQL and on SQLite ≥ 3.35). Batch services need that: a claim of a
hundred deliveries must know which of them it won, and reading the rows
again afterwards would be a second statement and a race. Django's
``QuerySet.update`` returns only a count.

:func:`rows_insert` is ``bulk_create`` in one cheap statement on
PostgreSQL: the hot paths (intake, audit, receipts) insert hundreds of rows
a second, and Django spends most of an insert preparing values.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.core.exceptions import EmptyResultSet
from django.db import connections, models, router
from django.db.models import Model, QuerySet
from django.db.models.sql import UpdateQuery
from pydantic_core import to_json
from uuid_utils.compat import uuid7


def time_ordered_uuid() -> uuid.UUID:
    """A new primary key: a version 7 UUID (RFC 9562), 48 bits of Unix time in
    milliseconds first, then random bits (uuid-utils also keeps a counter
    among them, so that ids made in the same millisecond are in order).

    The rows of the busy tables (violations, evidence, notices, deliveries)
    are written at hundreds a second and keep their ids in several b-tree
    indexes (their own key, and the foreign keys of the rows that point at
    them). Random (version 4) ids put every insert on a random leaf page of
    each of those indexes: once the indexes outgrow the database's buffer
    cache, nearly every insert reads a page from the disk cache and dirties
    one more page for the next checkpoint to write, with a full-page image
    in the WAL after each checkpoint. Time-ordered ids put new keys at the
    right-hand edge of each index, where the pages are already in memory.

    The random bits still make ids impractical to guess, and no id is a
    credential here (the portal's pages need a grant, not just the id).
    What a version 7 id does reveal is when its row was made, to the
    millisecond: a time that the row itself shows wherever its id is shown
    (a notice's issue time, an upload's receipt time).
    """
    return uuid7()


# How rows_insert reads each field of a model: the attribute as it is, the
# field's pre_save (automatic timestamps), or Django's whole preparation
# (anything else: encrypted fields, files, fields this does not know).
_PLAIN_FIELDS = (
    models.AutoField,
    models.BigAutoField,
    models.BigIntegerField,
    models.BooleanField,
    models.CharField,
    models.DateField,
    models.DateTimeField,
    models.DecimalField,
    models.ForeignKey,
    models.IntegerField,
    models.JSONField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.SmallIntegerField,
    models.TextField,
    models.UUIDField,
)


def update_returning_pks[M: Model](queryset: QuerySet[M], **changes: Any) -> list[Any]:
    """``queryset.update(**changes)``, returning the primary keys of the rows changed.

    The statement is the one Django builds for ``update()`` (filters across
    relations become a ``pk IN (subquery)``, as there) with ``RETURNING`` of
    the primary key appended. UUID keys come back as :class:`uuid.UUID` on
    every backend. A queryset that can match nothing (``none()``,
    ``pk__in=[]``) costs no statement.
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
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:  # a condition that matches nothing (pk__in=[]), as update() finds it
        return []
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


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    fields: tuple[tuple[str, models.Field[Any, Any], str], ...]  # (column, field, how)
    returning: bool  # the database numbers the rows: RETURNING their keys


@functools.cache
def _insert_plan(model: type[models.Model], alias: str, *, keys_given: bool) -> _InsertPlan:
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = model._meta  # noqa: SLF001 - Django's public model metadata
    fields = []
    for field in meta.concrete_fields:
        if field.primary_key and not keys_given:
            continue  # numbered by the database
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            how = "pre_save"
        elif type(field) in _PLAIN_FIELDS:  # exactly these: a subclass may prepare its values
            how = "plain"
        else:
            how = "prepare"
        fields.append((cast("str", field.column), field, how))  # a concrete field always has its column
    columns = ", ".join(quote(column) for column, _, _ in fields)
    record = ", ".join(f"{quote(column)} {field.db_type(connection)}" for column, field, _ in fields)
    assert meta.pk is not None  # noqa: S101 - every concrete model has one
    # Identifiers only, from the model and quoted: the rows travel as the one parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS rows({record})"
    )
    if not keys_given:
        sql += f" RETURNING {quote(cast('str', meta.pk.column))}"
    return _InsertPlan(sql=sql, fields=tuple(fields), returning=not keys_given)


def json_document(value: Any) -> str:
    """``value`` as the JSON text of a document PostgreSQL expands (``jsonb_to_recordset``).

    pydantic-core's serializer (pydantic's own engine): ~4x faster than
    json.dumps for rows of column values. UUIDs, decimals, dates and aware
    datetimes become the ISO text PostgreSQL reads back; anything else goes
    through str, as json.dumps's default=str did.
    """
    return to_json(value, fallback=str).decode()


def rows_insert(objs: Sequence[models.Model]) -> None:
    """``bulk_create(objs)`` for new rows of one model, in one statement.

    On PostgreSQL the rows travel as one JSON document expanded by the
    server (``jsonb_to_recordset``): Django's ``bulk_create`` spends ~40 µs
    per row of a twenty-column table preparing each value through the
    field's layers and dumping the columns into arrays, against ~15 µs
    here (measured, 100 violations). Values are what the fields would
    store: plain values as they are (UUIDs, decimals and aware datetimes as
    their text, which the server parses; JSON as it is), automatic
    timestamps from the field's ``pre_save``, anything else (encrypted
    fields, files) through Django's own preparation. Either every object
    has its primary key set (UUIDs) or none has (the database numbers them,
    and the numbers are set on the objects, in order, as ``bulk_create``
    does). The objects are marked saved. Other databases (the embedded
    SQLite) take ``bulk_create``. Call inside the caller's transaction; a
    constraint violation raises IntegrityError as ``bulk_create`` would.
    """
    if not objs:
        return
    model = type(objs[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    keys = {obj.pk is not None for obj in objs}
    if connection.vendor != "postgresql" or len(keys) != 1:
        model._default_manager.bulk_create(objs)  # noqa: SLF001 - Django's documented manager access
        return
    plan = _insert_plan(model, alias, keys_given=keys.pop())
    rows = []
    for obj in objs:
        row: dict[str, Any] = {}
        for column, field, how in plan.fields:
            if how == "plain":
                row[column] = getattr(obj, field.attname)
            elif how == "pre_save":
                row[column] = field.pre_save(obj, add=True)
            else:
                row[column] = field.get_db_prep_save(field.pre_save(obj, add=True), connection)
        rows.append(row)
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, [json_document(rows)])
        if plan.returning:
            # INSERT … SELECT returns its rows in the order it inserted them,
            # the document's (bulk_create relies on the same for VALUES).
            for obj, (pk,) in zip(objs, cursor.fetchall(), strict=True):
                obj.pk = pk
    for obj in objs:
        obj._state.adding = False  # noqa: SLF001 - what bulk_create does to the objects it saved
        obj._state.db = alias  # noqa: SLF001
