"""What the run is judged by: when deliveries are final, latency, and what the simulators received."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q, QuerySet

from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryAttempt, DeliveryReceipt
from cakra.enforcement.models import Notice, Region
from cakra.ops.bench.config import FINAL_STATUSES

SUCCEEDED_STATUSES = (Delivery.Status.SENT, Delivery.Status.DELIVERED, Delivery.Status.READ)


def final_filter(*, confirms: Mapping[str, bool], last_step: int = 1) -> Q:
    """Deliveries that settle their notice: confirmed, or only sent on a
    channel whose simulator reports no receipts (``confirms`` by channel),
    or failed for good at the plan's ``last_step`` (an earlier step that
    fails hands the notice on to the next one). One per notice."""
    unconfirmed = sorted(channel for channel, confirming in confirms.items() if not confirming)
    succeeded = [status for status in FINAL_STATUSES if status != Delivery.Status.FAILED_PERMANENT]
    failed = Q(status=Delivery.Status.FAILED_PERMANENT, step__gte=last_step)
    if not unconfirmed:
        return Q(status__in=succeeded) | failed
    if len(unconfirmed) == len(confirms):
        return Q(status__in=[*succeeded, Delivery.Status.SENT]) | failed
    return Q(status__in=succeeded) | Q(status=Delivery.Status.SENT, channel__in=unconfirmed) | failed


def final_count(*, region: Region, since: datetime, final: Q, expected: int) -> int:
    """Deliveries of notices issued since ``since`` that reached a final state.

    Polled each second, so counted on the (status, updated_at) index alone:
    the exact count joins every delivery to its notice, a cost that grows
    with the run and was charged to the pipeline's database CPU.
    Deliveries of other work in the same database can only make the cheap
    count high, so the exact one confirms it before the run is declared over.
    """
    done = Delivery.objects.filter(updated_at__gte=since).filter(final).count()
    if done < expected:
        return done
    return Delivery.objects.filter(notice__region=region, notice__issued_at__gte=since).filter(final).count()


def latencies_ms(notices: QuerySet[Notice], *, confirms: Mapping[str, bool]) -> list[float]:
    """Notice issued → delivery confirmed, for every delivery that got there:
    when the system recorded its first delivered or read receipt where the
    simulator reports receipts (the provider's own time can be coarser than
    the latency: WhatsApp's timestamps are whole seconds), else ``sent_at``."""
    confirmed = Min(
        "receipts__received_at",
        filter=Q(receipts__event__in=[DeliveryReceipt.Event.DELIVERED, DeliveryReceipt.Event.READ]),
    )
    rows = (
        Delivery.objects.filter(notice__in=notices)
        .annotate(confirmed=confirmed)
        .values_list("channel", "notice__issued_at", "confirmed", "sent_at")
    )
    latencies = []
    for channel, issued, received, sent in rows:
        at = received if confirms.get(channel, False) else sent
        if at is not None:
            latencies.append((at - issued).total_seconds() * 1000)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def deliveries_sent_twice(notices: QuerySet[Notice]) -> int:
    """Deliveries with more than one successful attempt recorded."""
    return (
        DeliveryAttempt.objects.filter(delivery__notice__in=notices, outcome=DeliveryAttempt.Outcome.SENT)
        .values("delivery")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )


def deliveries_succeeded(notices: QuerySet[Notice]) -> set[str]:
    """Ids of the deliveries recorded as accepted by their provider (sent, delivered or read)."""
    return {
        str(pk)
        for pk in Delivery.objects.filter(notice__in=notices, status__in=SUCCEEDED_STATUSES).values_list(
            "id", flat=True
        )
    }


def copies_beyond_first(received: Mapping[str, int]) -> int:
    """Messages received again for a delivery already received: what a recipient sees twice."""
    return sum(copies - 1 for copies in received.values() if copies > 1)


@dataclass(frozen=True, kw_only=True)
class DeliveryTally:
    """Lost and duplicated deliveries, from the database's record and what the simulators received."""

    unfinished: int  # notices without a final outcome by the deadline
    unreceived: int  # recorded as accepted, yet never received by the simulator
    duplicates: int  # copies received beyond the first of each delivery
    duplicated: int  # deliveries received more than once

    @property
    def lost(self) -> int:
        return self.unfinished + self.unreceived


def deliveries_tally(
    *, expected: int, final: int, succeeded: Iterable[str], received: Mapping[str, int]
) -> DeliveryTally:
    return DeliveryTally(
        unfinished=max(0, expected - final),
        unreceived=sum(1 for delivery_id in set(succeeded) if received.get(delivery_id, 0) < 1),
        duplicates=copies_beyond_first(received),
        duplicated=sum(1 for copies in received.values() if copies > 1),
    )


FALLBACK_ACTION = "delivery.fallback"
PLAN_EXHAUSTED_ACTION = "delivery.plan_exhausted"


def fallback_key(before: str, after: str) -> str:
    return f"{before}>{after}"


def messages_by_channel(notices: QuerySet[Notice]) -> Counter[str]:
    """Messages each channel handed to its provider: deliveries with a hand-over
    recorded, whatever their receipts said afterwards."""
    rows = (
        Delivery.objects.filter(notice__in=notices, sent_at__isnull=False)
        .values_list("channel")
        .annotate(n=Count("id"))
        .order_by()
    )
    return Counter(dict(rows))


def fallbacks_audited(*, region_code: str, since: datetime) -> Counter[str]:
    """Fallback steps taken (``"whatsapp>sms"``...) by the ``delivery.fallback``
    audit events, and the plans that ran out (``"exhausted"``)."""
    events = AuditEvent.objects.filter(
        action__in=[FALLBACK_ACTION, PLAN_EXHAUSTED_ACTION], region_code=region_code, created_at__gte=since
    ).values_list("action", "data")
    counted: Counter[str] = Counter()
    for action, data in events:
        if action == PLAN_EXHAUSTED_ACTION:
            counted["exhausted"] += 1
        else:
            counted[fallback_key(str(data.get("from_channel")), str(data.get("to_channel")))] += 1
    return counted


def fallbacks_by_status(notices: QuerySet[Notice], *, plan: Sequence[str]) -> Counter[str]:
    """Fallback steps taken, by the deliveries' statuses: each later step
    that left ``planned`` was reached by a fallback from the step before."""
    rows = (
        Delivery.objects.filter(notice__in=notices, step__gt=1)
        .exclude(status=Delivery.Status.PLANNED)
        .values_list("step")
        .annotate(n=Count("id"))
        .order_by()
    )
    counted: Counter[str] = Counter()
    for step, n in rows:
        if 1 < step <= len(plan):
            counted[fallback_key(plan[step - 2], plan[step - 1])] += n
    return counted
