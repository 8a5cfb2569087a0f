"""Scheduled operations that span the domain packages: thin, one service call each."""

from __future__ import annotations

from celery import shared_task

from cakra.enforcement.tasks import EVIDENCE_QUEUE
from cakra.ops.retention import retention_purge


# Retention deletes evidence files: it runs beside the evidence work, on its queue.
@shared_task(acks_late=True, ignore_result=True, queue=EVIDENCE_QUEUE)
def retention_purge_task() -> int:
    """Daily: remove personal data past its retention period (idempotent; a second run finds nothing)."""
    return retention_purge().batches
