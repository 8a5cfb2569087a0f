"""Model fields whose values are encrypted in the application."""

from __future__ import annotations

from typing import Any

from django.db import models

from cakra.security.crypto import key_ring


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A text column holding AES-GCM ciphertext; Python sees the clear text.

    The ciphertext is bound to ``<db_table>.<column>``. Encrypted columns
    cannot be filtered or ordered on meaningfully: pair them with a keyed-hash
    column (``cakra.security.crypto.lookup_hash``) where lookup is needed.
    """

    description = "Text encrypted with AES-256-GCM in the application"

    def _context(self) -> str:
        return f"{self.model._meta.db_table}.{self.column}"  # noqa: SLF001 - Django's documented Options API

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return key_ring().decrypt(value, context=self._context())

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return key_ring().encrypt(str(value), context=self._context())
