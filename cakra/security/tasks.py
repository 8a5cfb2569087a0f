"""Security tasks: thin."""

from __future__ import annotations

import structlog
from celery import shared_task

from cakra.security.ratelimit import counters_purge
from cakra.security.sessions import SessionStore

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


@shared_task(acks_late=True, ignore_result=True)
def sessions_expired_purge_task() -> None:
    """Delete expired sessions of both realms (one table): a finished session
    is personal data kept for no purpose, and Django never removes it itself."""
    SessionStore.clear_expired()
