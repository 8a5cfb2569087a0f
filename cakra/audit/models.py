"""Append-only, hash-chained audit events.

Each event stores the hash of its predecessor and a hash over its own content
and that predecessor hash, so changing, deleting or inserting any row breaks
the chain from that point on (``cakra audit verify`` names the first broken
link). The application never updates or deletes an event, and the database
refuses to (triggers installed by migration 0002). Events carry ids and
actions, never personal data.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from cakra.audit.hashing import GENESIS_HASH_VALUE as GENESIS_HASH


class AuditEvent(models.Model):
    # Several independent chains (see cakra.audit.services): each writer
    # process appends to its own, so writers do not queue on one lock.
    chain = models.PositiveSmallIntegerField()
    seq = models.BigIntegerField()
    created_at = models.DateTimeField()
    actor_type = models.CharField(max_length=16)  # officer | api_key | citizen | system
    actor_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    region_code = models.CharField(max_length=8, blank=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    # Not indexed: nothing looks an event up by its hash, and the chain's
    # integrity rests on the (chain, seq) key, the prev_hash links and the
    # anchors (cakra audit verify). A unique index on 64 random hex
    # characters (with PostgreSQL's LIKE twin) was two random-order index
    # inserts per event, seven events per notice.
    hash = models.CharField(max_length=64)

    class Meta:
        ordering: ClassVar[list[str]] = ["chain", "seq"]
        indexes: ClassVar[list[models.Index]] = [models.Index(fields=["object_type", "object_id"])]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["chain", "seq"], name="audit_event_chain_seq_unique"),
        ]

    def __str__(self) -> str:
        return f"#{self.chain}.{self.seq} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            msg = "audit events are append-only"
            raise PermissionError(msg)
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        msg = "audit events are append-only"
        raise PermissionError(msg)


class AuditChainHead(models.Model):
    """One row per chain: the lock writers take, and the latest link."""

    chain = models.PositiveSmallIntegerField(unique=True)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self) -> str:
        return f"chain {self.chain}@{self.seq}"
