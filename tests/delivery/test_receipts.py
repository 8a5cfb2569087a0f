"""Receipts move a delivery forward only, once per event, and a bounce hands
the notice to the next channel of its plan."""

from __future__ import annotations

import functools
import logging
import threading
import time
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.delivery.receipts import (
    RECEIPT_FIELDS,
    ReceiptReport,
    ReceiptResult,
    receipt_detail_clean,
    receipts_record,
)
from cakra.delivery.states import RECEIPT_TRANSITIONS, STATUS_RANK
from cakra.registry.models import ContactPoint
from cakra.simulators.smtp import MailSink
from tests.delivery.helpers import send
from tests.factories import make_notice

PROVIDER = "smtp"
REFERENCE = "<3f1c2b9e-receipt-test@korlantas.polri.go.id>"

S = Delivery.Status
APPLIED, RECORDED, IGNORED = ReceiptResult.APPLIED, ReceiptResult.RECORDED, ReceiptResult.IGNORED_OLDER


def _as_sent(delivery, *, status=S.SENT, reference=REFERENCE):
    Delivery.objects.filter(pk=delivery.pk).update(status=status, provider=PROVIDER, provider_reference=reference)
    delivery.refresh_from_db()
    return delivery


def _receipt(event, *, event_id=None, occurred_at=None, reference=REFERENCE, provider=PROVIDER, detail=""):
    return receipts_record(
        provider=provider,
        reports=[
            ReceiptReport(
                provider_reference=reference,
                event=event,
                occurred_at=occurred_at or timezone.now(),
                event_id=event_id or f"evt-{event}-{time.monotonic_ns()}",
                detail=detail,
            )
        ],
    )[0]


def _status(delivery):
    return Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)


def _audit(action):
    return list(AuditEvent.objects.filter(action=action))


def _issue(*, vehicle, key, region, capture_id):
    return make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id=capture_id,
        camera_id="CAM-9",
        captured_at=datetime.fromisoformat("2026-11-28T09:00:00+07:00"),
        location="Jl. M.H. Thamrin, Jakarta Pusat",
        article_code="287(1)",
    )


@pytest.fixture
def two_channel_notice(settings, vehicle, pre_validated_key, region):
    """A notice whose plan is email (step 1, pending) then post (step 2, planned)."""
    settings.CAKRA_ENABLED_CHANNELS = ["email", "post"]
    region.channel_order = ["whatsapp", "sms", "email", "post"]
    region.save(update_fields=["channel_order"])
    return _issue(vehicle=vehicle, key=pre_validated_key[0], region=region, capture_id="CAP-RECEIPT-2")


@pytest.fixture
def committed_delivery(vehicle, pre_validated_key, region):
    """An email delivery issued in its own transaction, as intake does (for tests that commit)."""
    with transaction.atomic():
        notice = _issue(vehicle=vehicle, key=pre_validated_key[0], region=region, capture_id="CAP-RECEIPT-3")
    return notice.deliveries.get(channel="email")


# --- the transition table ---------------------------------------------------------------
# current status → {event: (status after, result)}. Every pair is listed.
TABLE = {
    S.PLANNED: {
        "sent": (S.PLANNED, IGNORED),
        "delivered": (S.PLANNED, IGNORED),
        "read": (S.PLANNED, IGNORED),
        "failed": (S.PLANNED, IGNORED),
        "deferred": (S.PLANNED, RECORDED),
    },
    S.PENDING: {
        "sent": (S.PENDING, IGNORED),
        "delivered": (S.PENDING, IGNORED),
        "read": (S.PENDING, IGNORED),
        "failed": (S.PENDING, IGNORED),
        "deferred": (S.PENDING, RECORDED),
    },
    S.SENDING: {
        "sent": (S.SENDING, IGNORED),
        "delivered": (S.SENDING, IGNORED),
        "read": (S.SENDING, IGNORED),
        "failed": (S.SENDING, IGNORED),
        "deferred": (S.SENDING, RECORDED),
    },
    S.FAILED_TEMPORARY: {
        "sent": (S.FAILED_TEMPORARY, IGNORED),
        "delivered": (S.FAILED_TEMPORARY, IGNORED),
        "read": (S.FAILED_TEMPORARY, IGNORED),
        "failed": (S.FAILED_TEMPORARY, IGNORED),
        "deferred": (S.FAILED_TEMPORARY, RECORDED),
    },
    S.SENT: {
        "sent": (S.SENT, IGNORED),
        "delivered": (S.DELIVERED, APPLIED),
        "read": (S.READ, APPLIED),
        "failed": (S.FAILED_PERMANENT, APPLIED),
        "deferred": (S.SENT, RECORDED),
    },
    S.DELIVERED: {
        "sent": (S.DELIVERED, IGNORED),
        "delivered": (S.DELIVERED, IGNORED),
        "read": (S.READ, APPLIED),
        "failed": (S.DELIVERED, IGNORED),  # late junk after a confirmed delivery
        "deferred": (S.DELIVERED, RECORDED),
    },
    S.READ: {
        "sent": (S.READ, IGNORED),
        "delivered": (S.READ, IGNORED),
        "read": (S.READ, IGNORED),
        "failed": (S.READ, IGNORED),
        "deferred": (S.READ, RECORDED),
    },
    S.FAILED_PERMANENT: {
        "sent": (S.FAILED_PERMANENT, IGNORED),
        "delivered": (S.FAILED_PERMANENT, IGNORED),  # fallback has moved on
        "read": (S.FAILED_PERMANENT, IGNORED),
        "failed": (S.FAILED_PERMANENT, IGNORED),
        "deferred": (S.FAILED_PERMANENT, RECORDED),
    },
}


def test_the_table_covers_every_status_and_every_event():
    assert set(TABLE) == set(S.values)
    for row in TABLE.values():
        assert set(row) == set(DeliveryReceipt.Event.values)


@pytest.mark.parametrize(
    ("current", "event"), [(current, event) for current in TABLE for event in DeliveryReceipt.Event.values]
)
def test_a_receipt_moves_a_delivery_as_the_table_says(delivery, current, event):
    _as_sent(delivery, status=current)

    outcome = _receipt(event)

    expected_status, expected_result = TABLE[current][event]
    assert (_status(delivery), outcome.result) == (expected_status, expected_result)
    assert outcome.status == expected_status
    receipt = DeliveryReceipt.objects.get(delivery=delivery)
    assert (receipt.event, receipt.outcome, receipt.status_after) == (event, expected_result, expected_status)


def test_no_receipt_moves_a_delivery_backwards():
    for current, row in TABLE.items():
        for event, (after, _result) in row.items():
            assert STATUS_RANK[after] >= STATUS_RANK[current], (current, event)


def test_failure_counts_only_while_the_provider_has_not_confirmed_delivery():
    assert RECEIPT_TRANSITIONS["failed"].from_states == {S.SENT}


# --- timestamps -------------------------------------------------------------------------------
def test_delivered_sets_delivered_at_to_when_the_provider_says_it_happened(delivery):
    _as_sent(delivery)
    occurred = timezone.now() - timedelta(seconds=40)

    _receipt("delivered", occurred_at=occurred)

    delivery.refresh_from_db()
    assert delivery.delivered_at == occurred
    assert delivery.read_at is None


def test_read_without_delivered_sets_both_and_read_after_delivered_keeps_delivered_at(delivery):
    _as_sent(delivery)
    first = timezone.now() - timedelta(minutes=5)
    _receipt("read", occurred_at=first)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.delivered_at, delivery.read_at) == (S.READ, first, first)

    _as_sent(delivery, status=S.DELIVERED)
    later = timezone.now() - timedelta(minutes=1)
    _receipt("read", occurred_at=later)

    delivery.refresh_from_db()
    assert (delivery.delivered_at, delivery.read_at) == (first, later)


def test_a_provider_clock_ahead_of_ours_does_not_date_a_delivery_in_the_future(delivery):
    _as_sent(delivery)
    before = timezone.now()

    _receipt("delivered", occurred_at=before + timedelta(hours=3))

    delivery.refresh_from_db()
    assert before <= delivery.delivered_at <= timezone.now()
    assert DeliveryReceipt.objects.get().occurred_at == delivery.delivered_at


def test_a_naive_time_or_an_unknown_event_is_a_programming_error(delivery):
    _as_sent(delivery)

    with pytest.raises(ValueError, match="timezone-aware"):
        _receipt("delivered", occurred_at=timezone.now().replace(tzinfo=None))
    with pytest.raises(ValueError, match="unknown receipt event"):
        _receipt("bounced")
    assert not DeliveryReceipt.objects.exists()


# --- duplicates, order, unknown references -------------------------------------------------------
def test_a_duplicate_receipt_changes_nothing(delivery):
    _as_sent(delivery)
    first = _receipt("delivered", event_id="evt-1")
    delivery.refresh_from_db()
    audit_count = AuditEvent.objects.count()

    again = _receipt("delivered", event_id="evt-1")
    # The same id with another event is still the same report.
    forged = _receipt("failed", event_id="evt-1")

    assert first.result == APPLIED
    assert again.result == forged.result == ReceiptResult.DUPLICATE
    assert DeliveryReceipt.objects.count() == 1
    assert AuditEvent.objects.count() == audit_count
    reloaded = Delivery.objects.get(pk=delivery.pk)
    assert (reloaded.status, reloaded.updated_at, reloaded.last_error) == (S.DELIVERED, delivery.updated_at, "")


def test_event_ids_are_unique_per_provider_not_across_providers(delivery):
    _as_sent(delivery)
    _receipt("delivered", event_id="evt-shared")
    Delivery.objects.filter(pk=delivery.pk).update(provider="other-relay")

    outcome = _receipt("read", event_id="evt-shared", provider="other-relay")

    assert outcome.result == APPLIED
    assert DeliveryReceipt.objects.count() == 2


def test_read_before_delivered_stays_read(delivery):
    _as_sent(delivery)

    read = _receipt("read")
    late = _receipt("delivered")

    assert (read.result, late.result) == (APPLIED, IGNORED)
    assert _status(delivery) == S.READ
    # Both are on the timeline, in the order they arrived.
    assert list(DeliveryReceipt.objects.order_by("id").values_list("event", "outcome")) == [
        ("read", "applied"),
        ("delivered", "ignored_older"),
    ]


def test_delivered_then_sent_stays_delivered(delivery):
    _as_sent(delivery)

    _receipt("delivered")
    late = _receipt("sent")

    assert late.result == IGNORED
    assert _status(delivery) == S.DELIVERED


def test_a_receipt_for_an_unknown_reference_stores_nothing(delivery):
    _as_sent(delivery)
    audit_count = AuditEvent.objects.count()

    unknown = _receipt("delivered", reference="<never-sent@korlantas.polri.go.id>")
    other_provider = _receipt("delivered", provider="whatsapp-cloud")

    assert unknown.result == other_provider.result == ReceiptResult.UNKNOWN_REFERENCE
    assert (unknown.delivery_id, unknown.status) == ("", "")
    assert not DeliveryReceipt.objects.exists()
    assert AuditEvent.objects.count() == audit_count
    assert _status(delivery) == S.SENT


def test_every_stored_receipt_is_audited_with_ids_only(delivery, notice):
    _as_sent(delivery)

    _receipt("delivered", event_id="evt-audit", detail="250 ok for budi@example.co.id")

    [event] = _audit("delivery.receipt")
    assert (event.actor_type, event.actor_id, event.object_type) == ("provider", PROVIDER, "delivery")
    assert event.object_id == str(delivery.id)
    assert event.data["notice"] == str(notice.id)
    assert (event.data["event"], event.data["event_id"], event.data["outcome"]) == ("delivered", "evt-audit", "applied")
    assert "example.co.id" not in str(event.data)


# --- failures and fallback -------------------------------------------------------------------------
def test_a_bounce_of_a_sent_delivery_fails_it_and_activates_the_next_step(
    two_channel_notice, django_capture_on_commit_callbacks
):
    email, post = two_channel_notice.deliveries.order_by("step")
    assert (email.channel, post.channel, post.status) == ("email", "post", S.PLANNED)
    _as_sent(email)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = _receipt("failed", detail="550 5.1.1 <pemilik@example.co.id>: mailbox unavailable")

    assert outcome.result == APPLIED
    assert outcome.fallback_delivery_id == str(post.id)
    email.refresh_from_db()
    post.refresh_from_db()
    assert email.status == S.FAILED_PERMANENT
    assert email.last_error == "receipt failed: 550 5.1.1 <[address]>: mailbox unavailable"
    assert post.status == S.PENDING
    # The post send is enqueued after commit (the post adapter is not built yet: it is not run here).
    assert len(callbacks) == 1
    [fallback] = _audit("delivery.fallback")
    assert (fallback.data["from_delivery"], fallback.data["to_delivery"]) == (str(email.id), str(post.id))
    assert fallback.data["reason"].startswith("receipt failed: 550 5.1.1")


def test_a_second_bounce_does_not_advance_the_plan_again(two_channel_notice):
    email, post = two_channel_notice.deliveries.order_by("step")
    _as_sent(email)
    _receipt("failed", event_id="bounce-1")

    duplicate = _receipt("failed", event_id="bounce-1")
    another = _receipt("failed", event_id="bounce-2")

    assert duplicate.result == ReceiptResult.DUPLICATE
    assert another.result == IGNORED
    assert another.fallback_delivery_id == ""
    assert len(_audit("delivery.fallback")) == 1
    post.refresh_from_db()
    assert post.status == S.PENDING


def test_a_late_bounce_after_delivered_is_ignored_and_the_plan_stays(two_channel_notice):
    email, post = two_channel_notice.deliveries.order_by("step")
    _as_sent(email)
    _receipt("delivered")

    late = _receipt("failed", detail="550 mailbox full")

    assert late.result == IGNORED
    email.refresh_from_db()
    post.refresh_from_db()
    assert (email.status, email.last_error) == (S.DELIVERED, "")
    assert post.status == S.PLANNED
    assert not _audit("delivery.fallback")


def test_the_provider_detail_is_stored_without_addresses_or_numbers():
    text = "550 5.1.1 <budi.santoso@example.co.id> unknown; sms to +62 812-3456-7890 NIK 3174012345678901\x00"

    cleaned = receipt_detail_clean(text)

    assert cleaned == "550 5.1.1 <[address]> unknown; sms to [number] NIK [number]"
    assert len(receipt_detail_clean("x" * 500)) == 200


# --- batches -----------------------------------------------------------------------------------
def test_a_duplicate_in_a_batch_does_not_undo_its_neighbours(delivery):
    _as_sent(delivery)
    now = timezone.now()
    reports = [
        ReceiptReport(provider_reference=REFERENCE, event="delivered", occurred_at=now, event_id="b-1"),
        ReceiptReport(provider_reference=REFERENCE, event="delivered", occurred_at=now, event_id="b-1"),
        ReceiptReport(provider_reference="<unknown@x>", event="delivered", occurred_at=now, event_id="b-2"),
        ReceiptReport(provider_reference=REFERENCE, event="read", occurred_at=now, event_id="b-3"),
    ]

    outcomes = receipts_record(provider=PROVIDER, reports=reports)

    assert [o.result for o in outcomes] == [APPLIED, ReceiptResult.DUPLICATE, ReceiptResult.UNKNOWN_REFERENCE, APPLIED]
    assert _status(delivery) == S.READ
    assert sorted(DeliveryReceipt.objects.values_list("event_id", flat=True)) == ["b-1", "b-3"]


def test_references_and_event_ids_are_matched_exactly_whatever_their_characters(delivery):
    # The chunk's lookups send their values as one JSON array: quotes,
    # backslashes, percent signs and non-ASCII text must match as they are.
    odd = "<q\"uo\\te'%s%%{x}@korlantas.polri.go.id>"
    twin, other = _twins(delivery, 2)
    Delivery.objects.filter(pk=twin.pk).update(provider_reference=odd)
    Delivery.objects.filter(pk=other.pk).update(provider_reference="<pengiriman-é@korlantas.polri.go.id>")
    now = timezone.now()
    reports = [
        ReceiptReport(provider_reference=odd, event="delivered", occurred_at=now, event_id='e"\\1%s'),
        ReceiptReport(
            provider_reference="<pengiriman-é@korlantas.polri.go.id>", event="read", occurred_at=now, event_id="é-2"
        ),
        ReceiptReport(provider_reference=odd[:-1], event="delivered", occurred_at=now, event_id="e-3"),
    ]

    first = receipts_record(provider=PROVIDER, reports=reports)
    again = receipts_record(provider=PROVIDER, reports=reports)

    assert [o.result for o in first] == [APPLIED, APPLIED, ReceiptResult.UNKNOWN_REFERENCE]
    assert [o.result for o in again] == [
        ReceiptResult.DUPLICATE,
        ReceiptResult.DUPLICATE,
        ReceiptResult.UNKNOWN_REFERENCE,
    ]
    assert (_status(twin), _status(other)) == (S.DELIVERED, S.READ)
    assert sorted(DeliveryReceipt.objects.values_list("event_id", flat=True)) == sorted(['e"\\1%s', "é-2"])


def test_a_batch_longer_than_a_chunk_is_recorded_chunk_by_chunk_in_order(delivery, monkeypatch, caplog):
    monkeypatch.setattr("cakra.delivery.receipts.BATCH_CHUNK", 2)
    caplog.set_level(logging.INFO)
    first, second = _twins(delivery, 2)
    now = timezone.now()

    report = functools.partial(_report, occurred_at=now)

    outcomes = receipts_record(
        provider=PROVIDER,
        reports=[
            report(first, "delivered", "c-1"),
            report(second, "delivered", "c-2"),
            report(first, "delivered", "c-1"),  # a duplicate of the previous chunk
            report(first, "read", "c-3"),  # the same delivery, a later chunk
            ReceiptReport(provider_reference="<not-ours@x>", event="delivered", occurred_at=now, event_id="c-4"),
        ],
    )

    assert [(o.result, o.status) for o in outcomes] == [
        (APPLIED, S.DELIVERED),
        (APPLIED, S.DELIVERED),
        (ReceiptResult.DUPLICATE, ""),
        (APPLIED, S.READ),
        (ReceiptResult.UNKNOWN_REFERENCE, ""),
    ]
    assert [str(first.pk), str(second.pk), "", str(first.pk), ""] == [o.delivery_id for o in outcomes]
    assert [e.data["event_id"] for e in _audit("delivery.receipt")] == ["c-1", "c-2", "c-3"]
    unknown = [r.getMessage() for r in caplog.records if "delivery.receipt_unknown_reference" in r.getMessage()]
    assert len(unknown) == 1
    assert "c-4" in unknown[0]


def test_receipts_are_built_in_the_models_field_order():
    # Receipts are constructed with positional arguments in this order.
    assert tuple(field.attname for field in DeliveryReceipt._meta.concrete_fields) == RECEIPT_FIELDS


def test_a_stored_receipt_holds_every_column_as_reported(delivery):
    _as_sent(delivery)
    occurred = timezone.now() - timedelta(minutes=3)

    outcome = _receipt("failed", event_id="col-1", occurred_at=occurred, detail="550 5.1.1 <budi@example.com> unknown")

    receipt = DeliveryReceipt.objects.get()
    assert (receipt.provider, receipt.event_id, receipt.delivery_id) == (PROVIDER, "col-1", delivery.pk)
    assert (receipt.event, receipt.outcome, receipt.status_after) == ("failed", APPLIED, S.FAILED_PERMANENT)
    assert receipt.occurred_at == occurred
    assert occurred < receipt.received_at <= timezone.now()
    assert receipt.detail == "550 5.1.1 <[address]> unknown"
    assert (outcome.delivery_id, outcome.status) == (str(delivery.pk), S.FAILED_PERMANENT)


def _twins(delivery, count, *, status=S.SENT, first_step=10):
    """``count`` more deliveries of the notice in ``status``, each with its own reference."""
    twins = [
        Delivery(
            notice_id=delivery.notice_id,
            channel="email",
            step=step,
            contact_point_id=delivery.contact_point_id,
            status=status,
            provider=PROVIDER,
            provider_reference=f"<twin-{step}@korlantas.polri.go.id>",
        )
        for step in range(first_step, first_step + count)
    ]
    return Delivery.objects.bulk_create(twins)


def _state(delivery):
    row = Delivery.objects.values("status", "delivered_at", "read_at", "last_error").get(pk=delivery.pk)
    timeline = list(
        DeliveryReceipt.objects.filter(delivery=delivery).order_by("id").values_list("event", "outcome", "status_after")
    )
    return row, timeline


@pytest.mark.parametrize("start", [S.SENT, S.DELIVERED])
@pytest.mark.parametrize(
    "events",
    [
        *[(first, second) for first in DeliveryReceipt.Event.values for second in DeliveryReceipt.Event.values],
        ("delivered", "deferred", "read"),
        ("deferred", "read", "delivered", "failed"),
    ],
)
def test_reports_about_one_delivery_in_one_batch_end_as_if_they_came_one_by_one(delivery, start, events):
    batched, one_by_one = _twins(delivery, 2, status=start)
    base = timezone.now() - timedelta(minutes=10)
    times = [base + timedelta(minutes=n) for n in range(len(events))]

    outcomes = receipts_record(
        provider=PROVIDER,
        reports=[
            ReceiptReport(
                provider_reference=batched.provider_reference,
                event=event,
                occurred_at=at,
                event_id=f"batch-{n}",
                detail="550 no",
            )
            for n, (event, at) in enumerate(zip(events, times, strict=True))
        ],
    )
    singles = [
        _receipt(
            event, event_id=f"single-{n}", occurred_at=at, reference=one_by_one.provider_reference, detail="550 no"
        )
        for n, (event, at) in enumerate(zip(events, times, strict=True))
    ]

    assert [(o.result, o.status) for o in outcomes] == [(o.result, o.status) for o in singles]
    assert _state(batched) == _state(one_by_one)


def test_a_batch_mixing_events_deliveries_and_states_applies_each_as_the_table_says(two_channel_notice):
    email, post = two_channel_notice.deliveries.order_by("step")
    _as_sent(email)
    delivered, read, deferred, late, early = _twins(post, 5)  # later steps of the same notice, all sent
    Delivery.objects.filter(pk=late.pk).update(status=S.READ)
    Delivery.objects.filter(pk=early.pk).update(status=S.SENDING)
    now = timezone.now()

    report = functools.partial(_report, occurred_at=now)

    outcomes = receipts_record(
        provider=PROVIDER,
        reports=[
            report(delivered, "delivered", "m-1"),
            report(email, "failed", "m-2"),
            report(read, "read", "m-3"),
            report(deferred, "deferred", "m-4"),
            report(late, "delivered", "m-5"),
            report(early, "delivered", "m-6"),
            ReceiptReport(provider_reference="<not-ours@x>", event="delivered", occurred_at=now, event_id="m-7"),
            report(delivered, "delivered", "m-1"),
        ],
    )

    assert [(o.result, o.status) for o in outcomes] == [
        (APPLIED, S.DELIVERED),
        (APPLIED, S.FAILED_PERMANENT),
        (APPLIED, S.READ),
        (RECORDED, S.SENT),
        (IGNORED, S.READ),
        (IGNORED, S.SENDING),
        (ReceiptResult.UNKNOWN_REFERENCE, ""),
        (ReceiptResult.DUPLICATE, ""),
    ]
    assert outcomes[1].fallback_delivery_id == str(post.id)
    post.refresh_from_db()
    assert post.status == S.PENDING
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert [statuses[d.pk] for d in (email, delivered, read, deferred, late, early)] == [
        S.FAILED_PERMANENT,
        S.DELIVERED,
        S.READ,
        S.SENT,
        S.READ,
        S.SENDING,
    ]
    read.refresh_from_db()
    assert read.delivered_at == read.read_at == now
    assert [e.data["event_id"] for e in _audit("delivery.receipt")] == [f"m-{n}" for n in range(1, 7)]


def test_a_chunk_costs_the_same_statements_whatever_its_size(delivery):
    def statements(count, first_step):
        twins = _twins(delivery, count, first_step=first_step)
        now = timezone.now()
        reports = [
            ReceiptReport(
                provider_reference=d.provider_reference,
                event="read" if n % 3 == 0 else "delivered",
                occurred_at=now,
                event_id=f"{first_step}-{n}",
            )
            for n, d in enumerate(twins)
        ]
        with CaptureQueriesContext(connection) as queries:
            outcomes = receipts_record(provider=PROVIDER, reports=reports)
        assert {o.result for o in outcomes} == {APPLIED}
        return len(queries)

    # (60, not a full chunk: on SQLite, Django splits a bulk insert of more
    # than 999 parameters, and a hundred audit events are more.)
    assert statements(5, first_step=10) == statements(60, first_step=100)


@pytest.mark.django_db(transaction=True)
def test_the_same_receipt_arriving_twice_at_once_is_applied_once(committed_delivery):
    delivery = _as_sent(committed_delivery)
    start = threading.Barrier(2)
    results: list[ReceiptResult] = []

    def report():
        try:
            start.wait(timeout=5)
            results.append(_receipt("failed", event_id="evt-race").result)
        finally:
            connection.close()

    threads = [threading.Thread(target=report) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == sorted([APPLIED, ReceiptResult.DUPLICATE])
    assert DeliveryReceipt.objects.count() == 1
    assert len(_audit("delivery.receipt")) == 1
    assert _status(delivery) == S.FAILED_PERMANENT


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_posted_twice_at_once_applies_each_event_once(committed_delivery):
    # On PostgreSQL both requests look before either commits, so the loser's
    # chunk hits the unique constraint, rolls back whole and is recorded again
    # receipt by receipt; on SQLite the second simply waits for the first.
    first = _as_sent(committed_delivery)
    others = [
        Delivery(
            notice_id=first.notice_id,
            channel="email",
            step=step,
            contact_point_id=first.contact_point_id,
            status=S.SENT,
            provider=PROVIDER,
            provider_reference=f"<batch-{step}@korlantas.polri.go.id>",
        )
        for step in range(2, 30)
    ]
    Delivery.objects.bulk_create(others)
    now = timezone.now()
    reports = [
        ReceiptReport(provider_reference=d.provider_reference, event="delivered", occurred_at=now, event_id=f"ev-{n}")
        for n, d in enumerate([first, *others])
    ]
    start = threading.Barrier(2)
    results: list[ReceiptResult] = []

    def post():
        try:
            start.wait(timeout=5)
            results.extend(o.result for o in receipts_record(provider=PROVIDER, reports=reports))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results.count(APPLIED) == results.count(ReceiptResult.DUPLICATE) == len(reports)
    assert DeliveryReceipt.objects.count() == len(reports)
    assert len(_audit("delivery.receipt")) == len(reports)
    assert set(Delivery.objects.filter(provider=PROVIDER).values_list("status", flat=True)) == {S.DELIVERED}


# --- the sink reports, end to end ------------------------------------------------------------------
def _wait_for_status(delivery, wanted, *, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(delivery) in wanted:
            return _status(delivery)
        time.sleep(0.05)
    return _status(delivery)


@pytest.fixture
def reporting_sink(tmp_path, settings, live_server, email_relay):
    """The real sink, reporting to the real receipt endpoint served by live_server."""
    secret = settings.CAKRA_RECEIPT_WEBHOOKS["smtp-sink"]["SECRET"]
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
        receipt_url=f"{live_server.url}/api/v1/receipts/email/smtp-sink",
        receipt_secret=secret,
    ) as sink:
        email_relay(HOST="127.0.0.1", PORT=sink.smtp_port, SECURITY="none")
        yield sink


@pytest.mark.django_db(transaction=True)
def test_an_email_sent_through_the_adapter_becomes_delivered_by_the_sinks_receipt(reporting_sink, committed_delivery):
    delivery = committed_delivery
    send(delivery)
    assert _status(delivery) == S.SENT

    assert _wait_for_status(delivery, {S.DELIVERED}) == S.DELIVERED

    delivery.refresh_from_db()
    receipt = DeliveryReceipt.objects.get(delivery=delivery)
    assert (receipt.provider, receipt.event, receipt.outcome) == ("smtp", "delivered", "applied")
    assert delivery.delivered_at == receipt.occurred_at
    assert reporting_sink.receipts is not None
    assert reporting_sink.receipts.wait_idle(timeout=5)
    assert reporting_sink.receipts.counts["applied"] == 1


@pytest.mark.django_db(transaction=True)
def test_an_asynchronous_bounce_from_the_sink_fails_the_sent_email(reporting_sink, committed_delivery):
    delivery = committed_delivery
    # (Fallback to the next step is shown above; here the plan has email only,
    # so no send of a channel without an adapter is enqueued.)
    contact = ContactPoint.objects.get(pk=delivery.contact_point_id)
    contact.value = "softbounce.pemilik@example.co.id"
    contact.save(update_fields=["value"])

    send(delivery)
    assert _status(delivery) == S.SENT  # the relay accepted it at RCPT

    assert _wait_for_status(delivery, {S.FAILED_PERMANENT}) == S.FAILED_PERMANENT
    receipt = DeliveryReceipt.objects.get(delivery=delivery)
    assert (receipt.event, receipt.outcome) == ("failed", "applied")
    assert _audit("delivery.plan_exhausted")


def _report(target, event, event_id, *, occurred_at):
    return ReceiptReport(
        provider_reference=target.provider_reference, event=event, occurred_at=occurred_at, event_id=event_id
    )
