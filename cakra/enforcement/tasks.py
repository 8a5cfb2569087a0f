"""Evidence tasks: thin. Parse the id, call the service, map the outcome to retry or fail."""

from __future__ import annotations

from datetime import timedelta

import structlog
from celery import Task, shared_task
from django.utils import timezone

from cakra.enforcement.evidence import EvidenceDecodeError, evidence_derive, evidence_orphans_sweep
from cakra.enforcement.selectors import evidence_ids_awaiting_derivation

logger = structlog.get_logger(__name__)

EVIDENCE_QUEUE = "evidence"
MAX_RETRIES = 6
RETRY_BACKOFF_MAX_SECONDS = 600
# A derive task is normally done within seconds of intake; older misses were lost.
SWEEP_GRACE = timedelta(minutes=10)
# Older than this is left to an operator. (An undecodable image is not
# retried forever either way: evidence.DERIVE_MAX_ATTEMPTS bounds it.)
SWEEP_HORIZON = timedelta(days=7)
SWEEP_BATCH = 1000


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES, ignore_result=True, queue=EVIDENCE_QUEUE)
def evidence_derive_task(self: Task[[str], None], evidence_id: str) -> None:
    try:
        evidence_derive(evidence_id=evidence_id)
    except EvidenceDecodeError:
        # The original passed intake's structural checks but does not decode.
        # The attempt is recorded on the row; sweeps try again until the
        # attempts are used up. It stays stored (chain of custody).
        logger.exception("evidence.derive_failed", evidence_id=evidence_id)
    except OSError as exc:
        # Storage unavailable or full: transient, try again later.
        countdown = min(RETRY_BACKOFF_MAX_SECONDS, 5 * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(acks_late=True, ignore_result=True, queue=EVIDENCE_QUEUE)
def evidence_derive_sweep_task() -> int:
    """Re-enqueue derivations whose task was lost (the database is the truth, the queue a trigger)."""
    now = timezone.now()
    ids = evidence_ids_awaiting_derivation(
        received_after=now - SWEEP_HORIZON, received_before=now - SWEEP_GRACE, limit=SWEEP_BATCH
    )
    for evidence_id in ids:
        evidence_derive_task.apply_async(args=(str(evidence_id),), queue=EVIDENCE_QUEUE)
    if ids:
        logger.info("evidence.derive_sweep", enqueued=len(ids))
    return len(ids)


@shared_task(acks_late=True, ignore_result=True, queue=EVIDENCE_QUEUE)
def evidence_orphans_sweep_task() -> int:
    """Remove evidence files no row references (left by a crash between writing and committing)."""
    return evidence_orphans_sweep()
