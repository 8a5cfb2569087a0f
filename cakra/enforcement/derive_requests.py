"""Asking workers for evidence work: the one module, besides the tasks
themselves, that publishes it (the tasks import the evidence services, so
those services never import the tasks)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cakra.enforcement.models import Evidence
from cakra.enforcement.tasks import EVIDENCE_QUEUE, evidence_derive_task

# A page view asks for a missing derivative at most this often.
DERIVE_REQUEST_INTERVAL = timedelta(minutes=5)


def evidence_derive_enqueue_on_commit(*, evidence_id: UUID) -> None:
    """Derive after the intake commits (ids only).

    ``robust``: the capture is already stored when this runs, so a broker
    hiccup must not turn its answer into an error; the sweeper
    (``evidence_derive_sweep_task``) picks up what was never derived.
    """
    task_id = str(evidence_id)
    transaction.on_commit(lambda: evidence_derive_task.apply_async(args=(task_id,), queue=EVIDENCE_QUEUE), robust=True)


def evidence_derive_request(*, evidence: list[Evidence]) -> None:
    """Ask a worker for the derivatives a page view found missing (never decoding here).

    Derivatives of notices issued without an officer's review are made when
    first asked for, not at intake: most owners never open the photo. The
    conditional update lets one view per ``DERIVE_REQUEST_INTERVAL`` enqueue
    the work, so reloading a page cannot flood the evidence queue; images
    marked failed are not asked for again.
    """
    now = timezone.now()
    for item in evidence:
        if item.derivative or item.derive_failed_at is not None:
            continue
        if item.derive_requested_at is not None and item.derive_requested_at >= now - DERIVE_REQUEST_INTERVAL:
            continue  # asked for recently: no query at all on a reload
        requested = (
            Evidence.objects.filter(pk=item.pk, derived_at__isnull=True, derive_failed_at__isnull=True)
            .filter(Q(derive_requested_at__isnull=True) | Q(derive_requested_at__lt=now - DERIVE_REQUEST_INTERVAL))
            .update(derive_requested_at=now)
        )
        if requested:
            evidence_derive_enqueue_on_commit(evidence_id=item.pk)
