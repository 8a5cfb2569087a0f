"""Migration step: bind values sealed with column-only associated data to their rows.

Values written before row binding carry ``<table>.<column>`` as associated
data. This re-seals each with ``<table>.<column>.<row>`` in place, one
update per value; it runs once, inside the migration's transaction.
"""

from __future__ import annotations

from typing import Any

from cakra.security.crypto import key_ring
from cakra.security.fields import Ciphertext, EncryptedTextField, Sealed


def encrypted_values_bind_to_rows(
    apps: Any, schema_editor: Any, *, model_label: str, field_names: tuple[str, ...]
) -> None:
    model = apps.get_model(model_label)
    ring = key_ring()
    table = model._meta.db_table  # noqa: SLF001 - Django's documented Options API
    for name in field_names:
        field = model._meta.get_field(name)  # noqa: SLF001
        assert isinstance(field, EncryptedTextField)  # noqa: S101 - the migration names its own fields
        legacy_context = f"{table}.{field.column}"
        for pk, sealed, *bound_values in model.objects.values_list("pk", name, *field.bound_to).iterator():
            if not isinstance(sealed, Sealed):
                continue  # empty
            plaintext = ring.decrypt(sealed.token, context=legacy_context)
            token = ring.encrypt(plaintext, context=field.context_for(bound_values))
            model.objects.filter(pk=pk).update(**{name: Ciphertext(token)})
