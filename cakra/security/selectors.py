"""Reads on sealed values: which key protects how many of them."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import CharField, Count, F, Value
from django.db.models.functions import StrIndex, Substr

from cakra.security.columns import encrypted_columns


@dataclass(frozen=True, kw_only=True)
class KeyUsage:
    column: str  # <table>.<column>
    key_id: str
    values: int


def encrypted_values_status() -> list[KeyUsage]:
    """For every sealed column, how many values each key id protects (empty
    values are not counted). A key can leave ``CAKRA_FIELD_KEYS`` once it
    protects nothing in any column."""
    usage: list[KeyUsage] = []
    for column in encrypted_columns():
        key_id = Substr(
            F(column.field_name),
            1,
            StrIndex(F(column.field_name), Value("$")) - 1,
            output_field=CharField(),  # the key id, not the field's sealed value
        )
        rows = (
            column.model._default_manager.exclude(**{f"{column.field_name}__isnull": True})  # noqa: SLF001 - Django's documented manager access
            .exclude(**{column.field_name: column.written("")})
            .annotate(key_id=key_id)
            .values("key_id")
            .annotate(values=Count("pk"))
            .order_by("key_id")
        )
        usage.extend(KeyUsage(column=column.label, key_id=row["key_id"], values=row["values"]) for row in rows)
    return usage
