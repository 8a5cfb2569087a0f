"""Retention of personal data (UU PDP 27/2022: storage limitation): what a case no longer needs is removed.

Three rules, with periods in ``settings.CAKRA_RETENTION`` (their reasons are
given there):

- **Notices** issued more than ``NOTICE_DAYS`` ago: the evidence photos
  (originals and derivatives) are deleted from disk; the violation loses its
  plate, its vehicle and any rejection text; the notice loses its vehicle,
  its owner and its verification code; its deliveries lose the contact point
  (which address or number it went to) and receipts their provider text.
- **Rejected violations** decided more than ``REJECTED_DAYS`` ago: the
  photos, the plate, the vehicle link and the rejection text.
- **Violations never decided** (still ``received``: e.g. an unregistered
  plate no officer handled) received more than ``UNDECIDED_DAYS`` ago: the
  same as a rejected one. They stay ``received`` for the statistics but leave
  the review queue, which only lists captures that still have a plate.

The rows stay, so statistics survive: violations and notices keep their
region, article, camera, times, status and fine; deliveries their channel
and outcome. An unlinked row is recognised by its empty ``plate_compact``,
so a run is idempotent and a stopped run simply continues next time.

The registry mirror itself (owners, vehicles, contact points) is a copy of
the national registry that matching new captures needs; it is not purged
here. What is removed is what enforcement added: which person received
which notice at which address, and the photographs.

Each batch deletes its files first, outside any transaction (storage is I/O),
then clears the columns and appends one audit event with counts only, in one
transaction. A file that cannot be deleted stops the run before its rows are
cleared, so the next run tries again; a missing file counts as deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from cakra.audit.services import audit_event_record
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.enforcement.models import Evidence, Notice, Violation, evidence_storage

logger = structlog.get_logger(__name__)

RULE_NOTICE = "notice"
RULE_REJECTED = "rejected"
RULE_UNDECIDED = "undecided"
RULES = (RULE_NOTICE, RULE_REJECTED, RULE_UNDECIDED)


@dataclass
class RetentionCounts:
    """What a run removed (or, with dry_run, would remove), per rule."""

    violations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    evidence_files: int = 0
    notices: int = 0
    deliveries: int = 0
    receipts: int = 0
    batches: int = 0

    def as_data(self) -> dict[str, Any]:
        return {
            "violations": dict(self.violations),
            "evidence_files": self.evidence_files,
            "notices": self.notices,
            "deliveries": self.deliveries,
            "receipts": self.receipts,
            "batches": self.batches,
        }


def _due(*, rule: str, now: datetime) -> QuerySet[Violation]:
    """Violations whose personal data is due for removal under ``rule``, oldest first."""
    retention = settings.CAKRA_RETENTION
    linked = Violation.objects.exclude(plate_compact="")
    if rule == RULE_NOTICE:
        cutoff = now - timedelta(days=int(retention["NOTICE_DAYS"]))
        return linked.filter(notice__issued_at__lt=cutoff).order_by("notice__issued_at", "pk")
    if rule == RULE_REJECTED:
        cutoff = now - timedelta(days=int(retention["REJECTED_DAYS"]))
        return linked.filter(status=Violation.Status.REJECTED, decided_at__lt=cutoff).order_by("decided_at", "pk")
    cutoff = now - timedelta(days=int(retention["UNDECIDED_DAYS"]))
    return linked.filter(status=Violation.Status.RECEIVED, received_at__lt=cutoff).order_by("received_at", "pk")


def _evidence_files(violation_ids: list[Any]) -> list[str]:
    names: list[str] = []
    for original, derivative in Evidence.objects.filter(violation_id__in=violation_ids).values_list(
        "original", "derivative"
    ):
        names += [name for name in (original, derivative) if name]
    return names


def _purge_batch(*, rule: str, violation_ids: list[Any], now: datetime) -> RetentionCounts:
    """Delete the photos of these violations, then clear their personal columns and audit the batch."""
    counts = RetentionCounts()
    names = _evidence_files(violation_ids)
    storage = evidence_storage()
    for name in names:
        storage.delete(name)  # a missing file is no error; any other OSError stops the run
    counts.evidence_files = len(names)
    with transaction.atomic():
        Evidence.objects.filter(violation_id__in=violation_ids).update(original="", derivative="")
        counts.violations[rule] = Violation.objects.filter(pk__in=violation_ids).update(
            plate="", plate_compact="", vehicle=None, rejection_reason=""
        )
        notices = Notice.objects.filter(violation_id__in=violation_ids)
        counts.notices = notices.update(vehicle=None, owner=None, verification_code="", verification_code_hash="")
        deliveries = Delivery.objects.filter(notice__violation_id__in=violation_ids)
        counts.deliveries = deliveries.exclude(contact_point=None).update(contact_point=None)
        counts.receipts = (
            DeliveryReceipt.objects.filter(delivery__notice__violation_id__in=violation_ids)
            .exclude(detail="")
            .update(detail="")
        )
        counts.batches = 1
        audit_event_record(
            actor_type="system",
            action="retention.purged",
            object_type="retention_batch",
            # The batch's first violation: a stable handle for the event, not a secret.
            object_id=str(violation_ids[0]),
            data={"rule": rule, "purged_at": now.isoformat(), **counts.as_data()},
        )
    return counts


def _add(total: RetentionCounts, batch: RetentionCounts) -> None:
    for rule, number in batch.violations.items():
        total.violations[rule] += number
    total.evidence_files += batch.evidence_files
    total.notices += batch.notices
    total.deliveries += batch.deliveries
    total.receipts += batch.receipts
    total.batches += batch.batches


def retention_due_counts(*, now: datetime | None = None) -> RetentionCounts:
    """What a purge would remove now (a dry run): counts only, nothing changed."""
    now = now or timezone.now()
    counts = RetentionCounts()
    for rule in RULES:
        # A subquery, not a list of ids: a backlog after a long outage can be
        # larger than a query may bind parameters.
        due = _due(rule=rule, now=now).order_by()
        ids = due.values("pk")
        counts.violations[rule] = due.count()
        files = Evidence.objects.filter(violation_id__in=ids).aggregate(
            originals=Count("pk", filter=~Q(original="")), derivatives=Count("pk", filter=~Q(derivative=""))
        )
        counts.evidence_files += files["originals"] + files["derivatives"]
        counts.notices += Notice.objects.filter(violation_id__in=ids).count()
        counts.deliveries += Delivery.objects.filter(notice__violation_id__in=ids, contact_point__isnull=False).count()
        counts.receipts += (
            DeliveryReceipt.objects.filter(delivery__notice__violation_id__in=ids).filter(~Q(detail="")).count()
        )
    return counts


def retention_purge(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[RetentionCounts], None] = lambda _: None,
) -> RetentionCounts:
    """Remove personal data past its retention period, batch by batch; return the totals.

    ``on_batch`` receives the running totals after each batch (progress).
    Call outside a transaction: each batch commits on its own.
    """
    now = now or timezone.now()
    size = batch_size or int(settings.CAKRA_RETENTION["BATCH_SIZE"])
    total = RetentionCounts()
    for rule in RULES:
        while True:
            # Each batch clears plate_compact, so the next query moves on.
            ids = list(_due(rule=rule, now=now).values_list("pk", flat=True)[:size])
            if not ids:
                break
            _add(total, _purge_batch(rule=rule, violation_ids=ids, now=now))
            on_batch(total)
    logger.info("retention.purge_finished", **total.as_data())
    return total
