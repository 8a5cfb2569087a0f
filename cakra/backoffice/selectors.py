"""Reads for officer pages, every one scoped to the officer's region.

There is exactly one way an officer loads a violation, an evidence image or a
notice, and it answers "not found" alike for "doesn't exist" and "another
region's": an officer of one Polda cannot learn which ids exist elsewhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from cakra.backoffice.masking import mask_contact, mask_nik
from cakra.backoffice.models import Officer
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.selectors import TimelineEntry, notice_timeline
from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.models import Evidence, Notice, Violation
from cakra.enforcement.numbers import notice_number_clean, notice_number_is_valid
from cakra.registry.models import ContactPoint, Owner, Vehicle

QUEUE_PAGE_SIZE = 50


def _region_zone(officer: Officer) -> ZoneInfo:
    region = officer.region
    return ZoneInfo(region.timezone if region is not None else "Asia/Jakarta")


def violation_queue(*, officer: Officer) -> QuerySet[Violation]:
    """Violations waiting for a decision in the officer's region, oldest first.

    Ordered on the (region, status, received_at) index; the article is joined
    so a page of rows costs one query, whatever its length. A capture whose
    plate and photos the retention purge removed (never decided within its
    period) is left out: nothing remains to decide on, and it would otherwise
    sit at the head of the queue for good."""
    if officer.region_id is None:
        return Violation.objects.none()
    return (
        Violation.objects.filter(region_id=officer.region_id, status=Violation.Status.RECEIVED)
        .exclude(plate_compact="")
        .select_related("article")
        .order_by("received_at", "id")
    )


def violation_next_in_queue(*, officer: Officer) -> Violation | None:
    return violation_queue(officer=officer).first()


@dataclass(frozen=True)
class ReviewCounts:
    validated_today: int
    rejected_today: int


def review_counts_today(*, officer: Officer, now: datetime | None = None) -> ReviewCounts:
    """Decisions since midnight in the region's own time zone, in one query."""
    zone = _region_zone(officer)
    local_now = (now or timezone.now()).astimezone(zone)
    start = datetime.combine(local_now.date(), time.min, tzinfo=zone)
    if officer.region_id is None:
        return ReviewCounts(validated_today=0, rejected_today=0)
    totals = Violation.objects.filter(
        region_id=officer.region_id,
        status__in=[Violation.Status.VALIDATED, Violation.Status.REJECTED],
        decided_at__gte=start,
    ).aggregate(
        validated=Count("id", filter=Q(status=Violation.Status.VALIDATED)),
        rejected=Count("id", filter=Q(status=Violation.Status.REJECTED)),
    )
    return ReviewCounts(validated_today=totals["validated"], rejected_today=totals["rejected"])


@dataclass(frozen=True)
class MaskedContact:
    kind: str
    masked_value: str


@dataclass(frozen=True)
class RegistryMatch:
    """What an officer needs to see of the registry: that the plate matched a
    vehicle and an owner who can be reached, with identifiers masked."""

    vehicle: Vehicle
    owner_kind: str
    owner_name: str
    nik_masked: str
    contacts: list[MaskedContact] = field(default_factory=list)


@dataclass(frozen=True)
class ViolationDetail:
    violation: Violation
    evidence: list[Evidence]
    registry_match: RegistryMatch | None
    notice: Notice | None


def _officer_violations(*, officer: Officer) -> QuerySet[Violation]:
    if officer.region_id is None:
        return Violation.objects.none()
    return Violation.objects.filter(region_id=officer.region_id)


def _masked_contacts(owner: Owner) -> list[MaskedContact]:
    # Prefetched by the caller: reading them here costs no query.
    return [
        MaskedContact(kind=contact.kind, masked_value=mask_contact(kind=contact.kind, value=contact.value))
        for contact in owner.contact_points.all()
    ]


def violation_detail_for_officer(*, officer: Officer, violation_id: uuid.UUID | str) -> ViolationDetail:
    """The one way an officer reads a violation. Raises NotFoundError for an
    unknown id and for another region's violation alike."""
    try:
        violation = (
            _officer_violations(officer=officer)
            .select_related("article", "region", "vehicle", "vehicle__owner", "notice", "decided_by")
            .prefetch_related(
                Prefetch("evidence", queryset=Evidence.objects.order_by("position")),
                Prefetch(
                    "vehicle__owner__contact_points",
                    queryset=ContactPoint.objects.filter(is_active=True).order_by("kind", "created_at"),
                ),
            )
            .get(pk=violation_id)
        )
    except (Violation.DoesNotExist, ValueError) as exc:
        raise NotFoundError("violation not found") from exc
    match: RegistryMatch | None = None
    if violation.vehicle is not None:
        owner = violation.vehicle.owner
        match = RegistryMatch(
            vehicle=violation.vehicle,
            owner_kind=owner.kind,
            owner_name=owner.name,
            nik_masked=mask_nik(owner.nik),
            contacts=_masked_contacts(owner),
        )
    try:
        notice: Notice | None = violation.notice
    except Notice.DoesNotExist:
        notice = None
    return ViolationDetail(
        violation=violation, evidence=list(violation.evidence.all()), registry_match=match, notice=notice
    )


def evidence_derivative_for_officer(*, officer: Officer, evidence_id: uuid.UUID | str) -> Evidence:
    """An evidence item whose derivative is ready, in the officer's region.
    Unknown, another region's and not-yet-derived all raise NotFoundError:
    the original bytes are never a fallback."""
    if officer.region_id is None:
        raise NotFoundError("evidence not found")
    evidence = (
        Evidence.objects.filter(pk=evidence_id, violation__region_id=officer.region_id)
        .exclude(derivative="")
        .only("id", "derivative", "violation_id")
        .first()
    )
    if evidence is None:
        raise NotFoundError("evidence not found")
    return evidence


@dataclass(frozen=True)
class DeliveryTimeline:
    delivery: Delivery
    masked_contact: str
    attempts: list[DeliveryAttempt]


@dataclass(frozen=True)
class NoticeDetail:
    notice: Notice
    deliveries: list[DeliveryTimeline]
    # Every attempt, receipt, timeout and fallback step, oldest first.
    timeline: list[TimelineEntry] = field(default_factory=list)


def notice_detail_for_officer(*, officer: Officer, number: str) -> NoticeDetail:
    """A notice of the officer's region by number, with its delivery timeline.
    A malformed number, an unknown one and another region's look the same."""
    cleaned = notice_number_clean(number)
    if officer.region_id is None or not notice_number_is_valid(cleaned):
        raise NotFoundError("notice not found")
    notice = (
        Notice.objects.filter(number=cleaned, region_id=officer.region_id)
        .select_related("article", "vehicle", "violation", "region")
        .prefetch_related(
            Prefetch(
                "deliveries",
                queryset=Delivery.objects.select_related("contact_point")
                .order_by("step")
                .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number"))),
            )
        )
        .first()
    )
    if notice is None:
        raise NotFoundError("notice not found")
    timeline = [
        DeliveryTimeline(
            delivery=delivery,
            # No contact point: the retention schedule removed which address it went to.
            masked_contact=(
                mask_contact(kind=delivery.contact_point.kind, value=delivery.contact_point.value)
                if delivery.contact_point is not None
                else "-"
            ),
            attempts=list(delivery.attempts.all()),
        )
        for delivery in notice.deliveries.all()
    ]
    return NoticeDetail(notice=notice, deliveries=timeline, timeline=notice_timeline(notice=notice))


# --- Officer administration ------------------------------------------------------


def officer_list_for_admin(*, admin: Officer) -> QuerySet[Officer]:
    """The officers an administrator manages: those of their own region."""
    if admin.region_id is None or admin.role != Officer.Role.ADMIN:
        return Officer.objects.none()
    return Officer.objects.filter(region_id=admin.region_id).order_by("username")


def officer_get_for_admin(*, admin: Officer, officer_id: int) -> Officer:
    """One officer of the administrator's region; unknown and another
    region's alike raise NotFoundError."""
    officer = officer_list_for_admin(admin=admin).select_related("region").filter(pk=officer_id).first()
    if officer is None:
        raise NotFoundError("officer not found")
    return officer


def officer_get_by_username(*, username: str) -> Officer:
    """For the command line, which acts across regions."""
    officer = Officer.objects.select_related("region").filter(username=username.strip()).first()
    if officer is None:
        raise NotFoundError("no officer with this username", field="username")
    return officer
