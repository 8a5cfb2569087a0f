"""Model fields whose values are encrypted in the application, bound to their row.

A ciphertext's associated data is ``<db_table>.<column>.<row>``, where
``<row>`` is the row's primary key (or, for a model whose key the database
assigns at insert, the fields named in ``bound_to``, values known before the
insert that identify the row). Someone who can write to the database but
holds no key cannot move owner A's phone number into owner B's row: the
moved value fails authentication instead of being shown as B's.

Django gives ``from_db_value`` no row, so a loaded value stays sealed
(:class:`Sealed`) until the attribute is read, and the descriptor opens it
with the instance's binding; ``pre_save`` (used by ``save``, ``bulk_create``
and ``cakra.db.rows_insert``) seals with the instance's binding. Clear text
reaching the database by any other road (``QuerySet.update``,
``bulk_update``, a filter) could not be bound to its row and is refused.
``values()`` / ``values_list()`` yield :class:`Sealed` values: open them
with :meth:`EncryptedTextField.open_value` and the row's bound values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models
from django.db.models.query_utils import DeferredAttribute

from cakra.security.crypto import key_ring

BIND_TO_PRIMARY_KEY = ("pk",)


class Sealed:
    """A stored ciphertext, opened on first read (then ``plaintext`` holds it)."""

    __slots__ = ("opened_context", "plaintext", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.plaintext: str | None = None
        self.opened_context = ""

    def __repr__(self) -> str:
        # Never the clear text; the key id only (the ciphertext says nothing more).
        return f"<Sealed {self.token.partition('$')[0]}>"

    # Two loads of an unchanged column compare equal (``values()`` rows taken
    # before and after an operation, for one), whether or not either was opened.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)


class Ciphertext:
    """A value ``pre_save`` sealed for its row: what ``get_prep_value`` lets through."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


class UnboundWriteError(TypeError):
    """Clear text on a write path that cannot bind it to its row."""


class _EncryptedAttribute(DeferredAttribute):
    """Opens a loaded ciphertext on first read, with the instance's binding."""

    field: EncryptedTextField

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        data = instance.__dict__
        attname = self.field.attname
        if attname not in data:
            super().__get__(instance, cls)  # a deferred field: loads it
        value = data[attname]
        if isinstance(value, Sealed):
            context = self.field.row_context(instance)
            if value.plaintext is None or value.opened_context != context:
                value.plaintext = key_ring().decrypt(value.token, context=context)
                value.opened_context = context
            return value.plaintext
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = value


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A text column holding AES-GCM ciphertext; Python sees the clear text.

    Encrypted columns cannot be filtered or ordered on meaningfully: pair
    them with a keyed-hash column (``cakra.security.crypto.lookup_hash``)
    where lookup is needed.
    """

    description = "Text encrypted with AES-256-GCM in the application, bound to its row"
    descriptor_class = _EncryptedAttribute

    def __init__(self, *args: Any, bound_to: Sequence[str] = BIND_TO_PRIMARY_KEY, **kwargs: Any) -> None:
        self.bound_to = tuple(bound_to)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if self.bound_to != BIND_TO_PRIMARY_KEY:
            kwargs["bound_to"] = self.bound_to
        return name, path, args, kwargs

    def context_for(self, bound_values: Sequence[object]) -> str:
        """The associated data for a row whose ``bound_to`` fields hold ``bound_values``."""
        table = self.model._meta.db_table  # noqa: SLF001 - Django's documented Options API
        return ".".join((table, str(self.column), *(str(value) for value in bound_values)))

    def row_context(self, instance: models.Model) -> str:
        values = [getattr(instance, name) for name in self.bound_to]
        if any(value is None for value in values):
            # A database-assigned key is not known before the insert: sealing
            # without it would bind the value to no row at all.
            msg = f"{self.model.__name__}.{self.name} needs {', '.join(self.bound_to)} set before it is sealed"
            raise UnboundWriteError(msg)
        return self.context_for(values)

    def open_value(self, value: object, *, bound_values: Sequence[object]) -> str:
        """The clear text of a value read with ``values()`` / ``values_list()``."""
        if value is None or value == "":
            return ""
        if not isinstance(value, Sealed):
            msg = "expected a value loaded from the database"
            raise TypeError(msg)
        return key_ring().decrypt(value.token, context=self.context_for(bound_values))

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Sealed | str | None:
        if value is None or value == "":
            return value
        return Sealed(value)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = model_instance.__dict__.get(self.attname)
        if value is None or value == "":
            return value
        context = self.row_context(model_instance)
        if isinstance(value, Sealed):
            # Unchanged since loaded: keep the stored ciphertext (a conditional
            # update elsewhere may compare it). Reading it first proves it opens
            # for this row: a row whose binding changed (another primary key)
            # raises DecryptionError instead of saving a value sealed for
            # another row.
            getattr(model_instance, self.attname)
            return Ciphertext(value.token)
        return Ciphertext(key_ring().encrypt(str(value), context=context))

    def get_prep_value(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        if isinstance(value, Ciphertext):
            return value.token
        msg = (
            f"{self.model.__name__}.{self.name} is written only through save(), bulk_create() or "
            "cakra.db.rows_insert, which bind its ciphertext to the row"
        )
        raise UnboundWriteError(msg)

    def value_to_string(self, obj: models.Model) -> str:
        return str(getattr(obj, self.attname) or "")
