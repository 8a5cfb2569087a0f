"""The notice timeline: every attempt, receipt, timeout and fallback step,
from the audit trail, in the API's notice status and on the officer's page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from cakra.api.selectors import notice_get_for_region
from cakra.audit import services as audit_services
from cakra.backoffice.services import officer_totp_device_create
from cakra.delivery.channels.base import PermanentProviderError, SendResult
from cakra.delivery.models import Delivery
from cakra.delivery.outcomes import deliveries_record_outcomes
from cakra.delivery.receipts import ReceiptReport, receipts_record
from cakra.delivery.selectors import TimelineEntry, deliveries_get_for_send, notice_timeline
from cakra.delivery.sending import deliveries_claim
from cakra.delivery.sweeper import deliveries_sweep_stuck, deliveries_sweep_unconfirmed
from cakra.registry.models import ContactPoint
from tests.api.helpers import get
from tests.backoffice.conftest import english_client, sign_in
from tests.delivery.helpers import send
from tests.factories import make_notice

EXPECTED_EVENTS = [
    ("notice.issued", ""),
    ("delivery.planned", ""),
    ("delivery.failed", "whatsapp"),
    ("delivery.fallback", "whatsapp"),
    ("delivery.lease_expired", "email"),
    ("delivery.sent", "email"),
    ("notice.notified", "email"),
    ("delivery.receipt", "email"),
    ("delivery.timed_out", "email"),
    ("delivery.fallback", "email"),
]


def later(seconds):
    return timezone.now() + timedelta(seconds=seconds)


@pytest.fixture
def journey(settings, mail_sink, region, vehicle, pre_validated_key):
    """A notice planned WhatsApp → email → letter that went through every kind of event.

    WhatsApp refuses the number for good (recorded by the worker's own
    outcome service: the WhatsApp adapter has its own contract tests); the
    plan falls back to email, whose first worker dies mid-send; the sweeper
    gives the lease back, the email is sent, the relay reports it deferred,
    and with no delivery receipt by the cut-off the plan falls back to post.
    """
    settings.CAKRA_ENABLED_CHANNELS = ["whatsapp", "email", "post"]
    key, _token = pre_validated_key
    notice = make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id="CAP-TIMELINE",
        camera_id="CAM-9",
        captured_at=timezone.now() - timedelta(hours=5),
        location="Jl. Gatot Subroto, Jakarta Selatan",
        article_code="287(5)",
    )
    whatsapp, email, post = notice.deliveries.order_by("step")
    assert (whatsapp.channel, email.channel, post.channel) == ("whatsapp", "email", "post")

    assert deliveries_claim(delivery_ids=[whatsapp.pk]) == [whatsapp.pk]
    refused = SendResult(
        started_at=timezone.now(),
        duration_ms=85,
        error=PermanentProviderError("131026 recipient is not a WhatsApp user"),
    )
    deliveries_record_outcomes(
        deliveries=deliveries_get_for_send(delivery_ids=[whatsapp.pk]),
        results={whatsapp.pk: refused},
        provider="whatsapp-cloud",
    )

    assert deliveries_claim(delivery_ids=[email.pk]) == [email.pk]  # this worker dies
    deliveries_sweep_stuck(now=later(settings.CAKRA_SWEEPER["SENDING_LEASE_SECONDS"] + 1))
    send(email)
    email.refresh_from_db()
    receipts_record(
        provider=email.provider,
        reports=[
            ReceiptReport(
                provider_reference=email.provider_reference,
                event="deferred",
                occurred_at=timezone.now(),
                event_id="evt-deferred-1",
                detail="greylisted, retrying",
            )
        ],
    )[0]
    assert deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 + 1)) == 1
    post.refresh_from_db()
    assert post.status == Delivery.Status.PENDING
    return notice


def test_every_step_and_every_fallback_is_on_the_timeline_in_order(journey, region):
    post = journey.deliveries.get(step=3)

    timeline = notice_timeline(notice=journey)

    assert [(entry.event, entry.channel) for entry in timeline] == EXPECTED_EVENTS
    assert [entry.at for entry in timeline] == sorted(entry.at for entry in timeline)
    by_event: dict[str, list[TimelineEntry]] = {}
    for entry in timeline:
        by_event.setdefault(entry.event, []).append(entry)
    first_move, second_move = by_event["delivery.fallback"]
    assert (first_move.channel, first_move.to_channel, first_move.step) == ("whatsapp", "email", 1)
    assert (second_move.channel, second_move.to_channel, second_move.step) == ("email", "post", 2)
    assert second_move.detail == (f"email → post: not confirmed by cut-off ({region.digital_cutoff_hours} h)")
    [failed] = by_event["delivery.failed"]
    assert (failed.attempt, failed.provider, failed.outcome) == (1, "whatsapp-cloud", "permanent")
    assert failed.reason == "131026 recipient is not a WhatsApp user"
    assert failed.detail == (
        "attempt 1 via whatsapp-cloud: permanent (131026 recipient is not a WhatsApp user); final, no retry"
    )
    [expired] = by_event["delivery.lease_expired"]
    assert (expired.step, expired.attempt) == (2, 1)
    assert expired.detail == "attempt 1 lost with its worker (lease expired); sent again"
    [accepted] = by_event["delivery.sent"]
    assert (accepted.attempt, accepted.provider, accepted.outcome) == (2, "smtp", "sent")
    [receipt] = by_event["delivery.receipt"]
    assert receipt.outcome == "deferred"
    [timed_out] = by_event["delivery.timed_out"]
    assert timed_out.detail == f"not confirmed by cut-off (no delivery receipt within {region.digital_cutoff_hours} h)"
    assert by_event["delivery.planned"][0].detail == "plan: whatsapp → email → post"
    assert post.status == Delivery.Status.PENDING  # the plan went on


def test_the_plan_running_out_is_on_the_timeline(mail_sink, delivery, region):
    send(delivery)  # an email-only plan
    deliveries_sweep_unconfirmed(now=later(region.digital_cutoff_hours * 3600 + 1))

    last = notice_timeline(notice=delivery.notice)[-1]

    assert (last.event, last.channel) == ("delivery.plan_exhausted", "email")
    assert last.detail.startswith("no channel left after email: not confirmed by cut-off")


def test_the_timeline_costs_two_queries_or_one_with_the_deliveries_prefetched(
    journey, region, django_assert_num_queries
):
    with django_assert_num_queries(2):
        assert len(notice_timeline(notice=journey)) == len(EXPECTED_EVENTS)
    prefetched = notice_get_for_region(region_id=region.pk, number=journey.number)
    with django_assert_num_queries(1):
        assert len(notice_timeline(notice=prefetched)) == len(EXPECTED_EVENTS)


def test_the_api_notice_status_shows_the_timeline_without_personal_data(client, journey, pre_validated_key):
    _key, token = pre_validated_key

    response = get(client, token, f"notices/{journey.number}")

    assert response.status_code == 200
    timeline = response.json()["timeline"]
    assert [(entry["event"], entry["channel"]) for entry in timeline] == [
        (event, channel or None) for event, channel in EXPECTED_EVENTS
    ]
    assert all(set(entry) == {"at", "event", "channel", "detail"} for entry in timeline)
    moves = [entry["detail"] for entry in timeline if entry["event"] == "delivery.fallback"]
    assert moves[0].startswith("whatsapp → email: permanent: 131026")
    assert moves[1].startswith("email → post: not confirmed by cut-off")
    body = response.content.decode()
    owner = journey.owner
    personal = [owner.name, owner.nik, *(contact.value for contact in ContactPoint.objects.filter(owner=owner))]
    for value in personal:
        assert value not in body


def test_the_openapi_schema_describes_the_timeline(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    entry = schema["components"]["schemas"]["TimelineEntryOut"]
    assert set(entry["properties"]) == {"at", "event", "channel", "detail"}
    for name, spec in entry["properties"].items():
        assert spec.get("description"), name
    assert schema["components"]["schemas"]["NoticeOut"]["properties"]["timeline"]["description"]


def test_the_officer_notice_page_shows_each_fallback_step(journey, officer):
    device = officer_totp_device_create(officer=officer, name="test", confirmed=True)
    client = sign_in(english_client(), officer, device)

    response = client.get(reverse("backoffice:notice", args=[journey.number]))

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="event-deliveryfallback"') == 2
    assert "Moved to the next channel" in html
    assert "Not confirmed by the cut-off" in html
    assert "Sender stopped mid-send; sent again" in html
    assert "131026 recipient is not a WhatsApp user" in html
    assert "WhatsApp → Email" in html
    assert "Email → Post" in html
    assert "Deferred by the provider" in html
    email = ContactPoint.objects.get(owner=journey.owner, kind="email").value
    assert email not in html


def test_events_recorded_by_different_processes_are_in_time_order(mail_sink, delivery, monkeypatch):
    # The worker's chain may be far ahead of the web app's: sequence numbers
    # of different chains say nothing about which event came first.
    monkeypatch.setattr(audit_services, "audit_chain_of_this_process", lambda: 7)
    with transaction.atomic():
        for n in range(50):  # chain 7 is busy elsewhere
            audit_services.audit_event_record(
                actor_type="system", action="test.other", object_type="test", object_id=str(n)
            )
    send(delivery)  # recorded on chain 7, with a high sequence number
    delivery.refresh_from_db()
    monkeypatch.setattr(audit_services, "audit_chain_of_this_process", lambda: 1)
    receipts_record(
        provider=delivery.provider,
        reports=[
            ReceiptReport(  # then the web app, on its own chain, from sequence 1
                provider_reference=delivery.provider_reference,
                event="delivered",
                occurred_at=timezone.now(),
                event_id="evt-time-order",
            )
        ],
    )[0]

    events = [entry.event for entry in notice_timeline(notice=delivery.notice)]

    assert events.index("delivery.sent") < events.index("delivery.receipt")
