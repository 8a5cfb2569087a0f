"""Every column that holds values sealed with the field-encryption key ring.

Key rotation (``cakra keys reencrypt`` / ``status``) walks these, found
through Django's app registry: each
:class:`~cakra.security.fields.EncryptedTextField` of every installed model,
and the columns of fields this project does not own (the TOTP seeds in
django-otp's table) that a model declares in ``sealed_columns``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.apps import apps
from django.db import models

from cakra.security.fields import Ciphertext, EncryptedTextField, Sealed


@dataclass(frozen=True, kw_only=True)
class EncryptedColumn:
    """One sealed column: where it is, what its rows are bound to, and how a
    row's associated data is formed from the bound values."""

    model: type[models.Model]
    field_name: str
    bound_to: tuple[str, ...]
    context_for: Callable[[Sequence[object]], str]

    @property
    def label(self) -> str:
        field = self.model._meta.get_field(self.field_name)  # noqa: SLF001 - Django's documented Options API
        return f"{self.model._meta.db_table}.{field.column}"  # type: ignore[union-attr] # noqa: SLF001 - a concrete field

    @property
    def encrypted_field(self) -> bool:
        return isinstance(self.model._meta.get_field(self.field_name), EncryptedTextField)  # noqa: SLF001

    def stored(self, value: object) -> str:
        """The stored token of a value read with ``values_list``."""
        return value.token if isinstance(value, Sealed) else str(value or "")

    def written(self, token: str) -> object:
        """``token`` as an UPDATE or filter on this column takes it."""
        return Ciphertext(token) if self.encrypted_field else token


@dataclass(frozen=True, kw_only=True)
class SealedColumn:
    """A sealed column of a field class the project does not own, declared
    by the model that seals it: ``sealed_columns: ClassVar[tuple[SealedColumn,
    ...]]`` on the model (a proxy declares its concrete model's table)."""

    field_name: str
    bound_to: tuple[str, ...]
    context_for: Callable[[Sequence[object]], str]


def encrypted_columns() -> list[EncryptedColumn]:
    columns: dict[str, EncryptedColumn] = {}
    for model in apps.get_models():
        options = model._meta  # noqa: SLF001 - Django's documented Options API
        found = [
            EncryptedColumn(model=model, field_name=field.name, bound_to=field.bound_to, context_for=field.context_for)
            for field in ([] if options.proxy else options.concrete_fields)
            if isinstance(field, EncryptedTextField)
        ]
        concrete = options.concrete_model
        declared: tuple[SealedColumn, ...] = getattr(model, "sealed_columns", ())
        found += [
            EncryptedColumn(
                model=concrete, field_name=item.field_name, bound_to=item.bound_to, context_for=item.context_for
            )
            for item in declared
            if concrete is not None
        ]
        # By label: a proxy and its subclasses would declare the same table's column.
        columns.update((column.label, column) for column in found)
    return sorted(columns.values(), key=lambda column: column.label)
