"""Writes on sealed values: moving them to the active key after a rotation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from django.db import transaction

from cakra.security.columns import EncryptedColumn, encrypted_columns
from cakra.security.crypto import DecryptionError, key_ring

logger = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 500


@dataclass(kw_only=True)
class ReencryptSummary:
    """``reencrypted``: values moved to the active key (would be, in a dry
    run); ``changed_meanwhile``: values a concurrent write replaced between
    our read and our update (left as that write stored them, under the key it
    used; a later run moves them if that was not the active key);
    ``failed``: values that did not decrypt (key missing from the ring, or
    tampered with), left as they are."""

    reencrypted: int = 0
    changed_meanwhile: int = 0
    failed: int = 0


def encrypted_values_reencrypt(
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    columns: Sequence[EncryptedColumn] | None = None,
    on_batch: Callable[[EncryptedColumn, int], None] | None = None,
) -> ReencryptSummary:
    """Re-seal every value not under the active key with the active key.

    Safe on a live system: each column is walked in primary-key order in
    batches; only the batch's updates share a (short) transaction, and
    each update is conditional on the row still holding the ciphertext
    that was read, so a value written meanwhile by the application is
    never replaced with a stale one. Idempotent and resumable: values
    already under the active key are not read again, so a run stopped
    anywhere is finished by running it again. ``on_batch`` is called with
    the column and the number of values looked at.
    """
    ring = key_ring()
    active_prefix = f"{ring.active}$"
    summary = ReencryptSummary()
    for column in encrypted_columns() if columns is None else columns:
        manager = column.model._default_manager  # noqa: SLF001 - Django's documented manager access
        pending = (
            manager.exclude(**{f"{column.field_name}__isnull": True})
            .exclude(**{column.field_name: column.written("")})
            .exclude(**{f"{column.field_name}__startswith": active_prefix})
            .order_by("pk")
        )
        last_pk: object = None
        while True:
            batch = pending if last_pk is None else pending.filter(pk__gt=last_pk)
            rows = list(batch.values_list("pk", column.field_name, *column.bound_to)[:batch_size])
            if not rows:
                break
            last_pk = rows[-1][0]
            updates = []
            for pk, stored, *bound_values in rows:
                token = column.stored(stored)
                context = column.context_for(bound_values)
                try:
                    plaintext = ring.decrypt_bytes(token, context=context)
                except DecryptionError:
                    summary.failed += 1
                    logger.warning("keys.reencrypt_failed", column=column.label, pk=str(pk))
                    continue
                updates.append((pk, token, ring.encrypt_bytes(plaintext, context=context)))
            if dry_run:
                summary.reencrypted += len(updates)
            else:
                with transaction.atomic():
                    for pk, old, new in updates:
                        moved = manager.filter(pk=pk, **{column.field_name: column.written(old)}).update(
                            **{column.field_name: column.written(new)}
                        )
                        if moved:
                            summary.reencrypted += 1
                        else:
                            summary.changed_meanwhile += 1
            if on_batch is not None:
                on_batch(column, len(rows))
    return summary
