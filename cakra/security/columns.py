"""Every column that holds values sealed with the field-encryption key ring.

Key rotation (``cakra keys reencrypt`` / ``status``) walks these: each
:class:`~cakra.security.fields.EncryptedTextField` of every installed model,
and the TOTP seeds django-otp keeps in its own table
(cakra.backoffice.models.OfficerTOTPDevice).
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


def encrypted_columns() -> list[EncryptedColumn]:
    from cakra.backoffice.models import OfficerTOTPDevice, totp_seed_context

    columns = [
        EncryptedColumn(model=model, field_name=field.name, bound_to=field.bound_to, context_for=field.context_for)
        for model in apps.get_models()
        if not model._meta.proxy  # noqa: SLF001 - Django's documented Options API
        for field in model._meta.concrete_fields  # noqa: SLF001
        if isinstance(field, EncryptedTextField)
    ]
    columns.append(
        EncryptedColumn(
            model=OfficerTOTPDevice._meta.concrete_model,  # noqa: SLF001 - django-otp's own table, as stored
            field_name="key",
            bound_to=("user_id",),
            context_for=lambda values: totp_seed_context(user_id=values[0]),
        )
    )
    return sorted(columns, key=lambda column: column.label)
