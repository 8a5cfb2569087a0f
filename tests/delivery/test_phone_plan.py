"""The demo plan, WhatsApp -> SMS -> email, through the real sending path
(claim, render, send, record, fallback) with in-memory providers: a
permanent failure, or no receipt by the channel's cut-off, moves the notice
to the next channel in the same transaction, and each step is on the
notice's timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.delivery.channels import locmem
from cakra.delivery.message_templates import message_templates_sync
from cakra.delivery.models import Delivery
from cakra.delivery.selectors import notice_timeline
from cakra.delivery.sweeper import NOT_CONFIRMED, deliveries_sweep_unconfirmed
from cakra.simulators.magic import Magic, magic_number
from tests.delivery.helpers import send
from tests.factories import VehicleFactory, make_notice, make_owner

pytestmark = pytest.mark.django_db

NOT_ON_WHATSAPP = magic_number(Magic.NOT_ON_WHATSAPP, 1)
SMS_FAILS = magic_number(Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE, 1)


def _entry(channel: str, backend: str, answers: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "CHANNEL": channel,
        "BACKEND": f"cakra.delivery.channels.locmem.{backend}",
        "PRIORITY": 10,
        "SENDER_IDENTITY": f"locmem:{channel}",
        "RATE_PER_SECOND": 1000,
        "BURST": 1000,
        "OPTIONS": {"ANSWERS": answers or {}},
    }


@pytest.fixture
def phone_plan(settings, region, provider_state):
    settings.CAKRA_ENABLED_CHANNELS = ["whatsapp", "sms", "email"]
    settings.CAKRA_PROVIDERS = {
        "wa": _entry("whatsapp", "LocmemWhatsAppAdapter", {NOT_ON_WHATSAPP: "permanent", SMS_FAILS: "permanent"}),
        "sms": _entry("sms", "LocmemSmsAdapter", {SMS_FAILS: "permanent"}),
        "mail": _entry("email", "LocmemEmailAdapter"),
    }
    region.channel_order = ["whatsapp", "sms", "email", "post"]
    region.channel_cutoff_hours = {"whatsapp": 6}
    region.digital_cutoff_hours = 48
    region.save()
    message_templates_sync(approved=True)
    locmem.outbox_clear()
    yield region
    locmem.outbox_clear()


def _notice_for(region, *, mobile: str):
    vehicle = VehicleFactory.create(owner=make_owner(mobile=mobile))
    return make_notice(vehicle=vehicle, region=region)


def _plan(notice) -> list[tuple[str, str]]:
    return list(notice.deliveries.order_by("step").values_list("channel", "status"))


def test_the_plan_is_whatsapp_then_sms_then_email(phone_plan):
    notice = _notice_for(phone_plan, mobile="+6281234500001")
    assert _plan(notice) == [("whatsapp", "pending"), ("sms", "planned"), ("email", "planned")]


def test_whatsapp_delivers_and_nothing_else_is_sent(phone_plan):
    notice = _notice_for(phone_plan, mobile="+6281234500002")
    send(notice.deliveries.get(step=1))
    assert _plan(notice)[0] == ("whatsapp", "sent")
    [(provider, message)] = locmem.outbox
    assert provider == "wa"
    assert message.template is not None
    assert message.recipient == "+6281234500002"
    # The timeline names the approved template the citizen saw.
    [sent] = [entry for entry in notice_timeline(notice=notice) if entry.event == "delivery.sent"]
    assert sent.detail == "attempt 1 via wa: accepted, template cakra_notice id v1"


def test_not_on_whatsapp_falls_back_to_sms_then_a_failed_sms_to_email(phone_plan, django_capture_on_commit_callbacks):
    notice = _notice_for(phone_plan, mobile=SMS_FAILS)
    with django_capture_on_commit_callbacks(execute=False):
        send(notice.deliveries.get(step=1))
    assert _plan(notice)[:2] == [("whatsapp", "failed_permanent"), ("sms", "pending")]
    with django_capture_on_commit_callbacks(execute=False):
        send(notice.deliveries.get(step=2))
    assert _plan(notice) == [("whatsapp", "failed_permanent"), ("sms", "failed_permanent"), ("email", "pending")]
    send(notice.deliveries.get(step=3))
    assert _plan(notice)[2] == ("email", "sent")

    fallbacks = AuditEvent.objects.filter(action="delivery.fallback", object_id=str(notice.id)).order_by("id")
    assert [(e.data["from_channel"], e.data["to_channel"]) for e in fallbacks] == [
        ("whatsapp", "sms"),
        ("sms", "email"),
    ]
    timeline = [(entry.event, entry.channel, entry.to_channel) for entry in notice_timeline(notice=notice)]
    assert ("delivery.fallback", "whatsapp", "sms") in timeline
    assert ("delivery.fallback", "sms", "email") in timeline


def test_no_receipt_by_the_channels_own_cutoff_moves_to_the_next_channel(phone_plan):
    notice = _notice_for(phone_plan, mobile="+6281234500003")
    whatsapp = notice.deliveries.get(step=1)
    send(whatsapp)
    assert whatsapp.status == Delivery.Status.SENT

    # WhatsApp's cut-off in this region is 6 h (email keeps the region's 48 h).
    assert deliveries_sweep_unconfirmed(now=timezone.now() + timedelta(hours=5)) == 0
    assert deliveries_sweep_unconfirmed(now=timezone.now() + timedelta(hours=7)) == 1
    whatsapp.refresh_from_db()
    assert (whatsapp.status, whatsapp.last_error) == (Delivery.Status.FAILED_PERMANENT, NOT_CONFIRMED)
    assert _plan(notice)[1] == ("sms", "pending")
    [timed_out] = AuditEvent.objects.filter(action="delivery.timed_out", object_id=str(whatsapp.id))
    assert timed_out.data["cutoff_hours"] == 6


def test_a_region_without_a_whatsapp_number_plans_sms_first(phone_plan):
    phone_plan.whatsapp_phone_number_id = ""
    phone_plan.save()
    notice = _notice_for(phone_plan, mobile="+6281234500004")
    assert [channel for channel, _ in _plan(notice)] == ["sms", "email"]
