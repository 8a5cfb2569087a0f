"""Security tasks: thin."""

from __future__ import annotations

import structlog
from celery import shared_task

from cakra.security.ratelimit import counters_purge

logger = structlog.get_logger(__name__)


# On the default queue, beside the other scheduled work; idempotent, so an
# overlapping or redelivered run is harmless.
@shared_task(acks_late=True, ignore_result=True)
def ratelimit_counters_purge_task() -> int:
    """Delete rate-limit counters whose window has ended (database store; Redis expires its own)."""
    deleted = counters_purge()
    if deleted:
        logger.info("ratelimit.counters_purged", deleted=deleted)
    return deleted
