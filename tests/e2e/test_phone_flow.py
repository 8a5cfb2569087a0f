"""The phone plan end to end, through real processes and wire protocols: a
capture posted to the API becomes a WhatsApp template message on the
simulated Cloud API, its statuses come back through the signed webhook; an
owner who is not on WhatsApp gets the SMS over SMPP instead, receipted by
``deliver_sm``; and a citizen's reply to the official number gets the
automatic answer. Each step is on the notice's timeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings
from kombu import Queue

from cakra.config.celery import app as celery_app
from cakra.delivery.message_templates import DEFINITIONS_FILE, message_templates_sync
from cakra.delivery.models import Delivery, InboundMessage
from cakra.delivery.selectors import notice_timeline
from cakra.enforcement.models import Notice
from cakra.ops.management.commands.run import WORKER_QUEUES
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc import SmscSimulator
from cakra.simulators.smtp import MailSink
from cakra.simulators.whatsapp.simulator import WhatsAppSimulator
from tests.e2e import processes
from tests.e2e.processes import celery_worker, wait_for
from tests.e2e.test_notice_flow import post_violation
from tests.factories import VehicleFactory, make_owner

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE_NUMBER_ID = "109900000000110"
NOT_ON_WHATSAPP = magic_number(Magic.NOT_ON_WHATSAPP, 4242)
ON_WHATSAPP = "+6281234504242"


@pytest.fixture
def phone_region(settings, region):
    settings.CAKRA_ENABLED_CHANNELS = ["whatsapp", "sms", "email"]
    region.channel_order = ["whatsapp", "sms", "email"]
    region.whatsapp_phone_number_id = PHONE_NUMBER_ID
    region.whatsapp_display_name = "ETLE Polda Metro Jaya"
    region.sms_sender_id = "ETLE-PMJ"
    region.save()
    message_templates_sync(approved=True)
    return region


@pytest.fixture
def whatsapp(live_server, phone_region):
    options = settings.CAKRA_WHATSAPP_SIM
    with WhatsAppSimulator(
        access_token=str(options["ACCESS_TOKEN"]),
        app_secret=str(options["APP_SECRET"]),
        waba_id="102290129340398",
        business_numbers={PHONE_NUMBER_ID: {"display_phone_number": "6281115001100", "verified_name": "ETLE PMJ"}},
        templates_file=DEFINITIONS_FILE,
        webhook_url=f"{live_server.url}/api/v1/webhooks/whatsapp/whatsapp-sim",
        webhook_retry_base=0.5,
    ) as simulator:
        yield simulator


@pytest.fixture
def smsc():
    with SmscSimulator.from_settings(smpp_port=0, http_port=None) as simulator:
        yield simulator


@pytest.fixture
def sink(tmp_path):
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=str(settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]),
        dkim_selector=str(settings.CAKRA_EMAIL["DKIM_SELECTOR"]),
    ) as mail_sink:
        yield mail_sink


@contextmanager
def _receipts_listener(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    log_path = settings.DATA_DIR / f"smpp-receipts-{os.getpid()}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cakra.cli", "smpp-receipts", "--provider", "smpp"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def system(whatsapp, smsc, sink):
    """A worker and the SMPP receipts listener pointed at the simulators (SMPP
    the only SMS route: the HTTP gateway is not running here)."""
    with celery_app.connection_for_write() as connection:
        for name in WORKER_QUEUES.split(","):
            Queue(name).bind(connection.default_channel).declare()
            Queue(name).bind(connection.default_channel).purge()
    env = {
        "CAKRA_ENABLED_CHANNELS": "whatsapp,sms,email",
        "CAKRA_WHATSAPP_BASE_URL": f"http://127.0.0.1:{whatsapp.http_port}",
        "CAKRA_SMPP_PORT": str(smsc.smpp_port),
        "CAKRA_PROVIDERS_JSON": json.dumps({"sms-http": None}),
        "CAKRA_SMTP_HOST": "127.0.0.1",
        "CAKRA_SMTP_PORT": str(sink.smtp_port),
        "CAKRA_SMTP_SECURITY": "none",
    }
    listener_env = {
        **os.environ,
        "DATABASE_URL": processes.test_database_url(),
        "CAKRA_DATA_DIR": str(settings.DATA_DIR),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with celery_worker(queues=WORKER_QUEUES, extra_env=env), _receipts_listener(listener_env):
        yield


def _issue(live_server, pre_validated_key, *, mobile: str, capture_id: str) -> Notice:
    _key, token = pre_validated_key
    vehicle = VehicleFactory.create(owner=make_owner(mobile=mobile))
    status, body = post_violation(live_server.url, token, plate=vehicle.plate, capture_id=capture_id)
    assert status == 201, body
    return Notice.objects.get(violation_id=body["id"])


def _delivery(notice: Notice, channel: str, *statuses: str) -> Delivery | None:
    return Delivery.objects.filter(notice=notice, channel=channel, status__in=statuses).first()


def test_whatsapp_first_sms_for_owners_not_on_whatsapp_and_an_answer_to_a_reply(
    live_server, whatsapp, smsc, system, pre_validated_key
):
    on_whatsapp = _issue(live_server, pre_validated_key, mobile=ON_WHATSAPP, capture_id="JKT-E2E-WA-1")
    not_on_whatsapp = _issue(live_server, pre_validated_key, mobile=NOT_ON_WHATSAPP, capture_id="JKT-E2E-WA-2")

    # The template message on the citizen's phone, read, with the receipts on the delivery.
    read = wait_for(
        lambda: _delivery(on_whatsapp, "whatsapp", Delivery.Status.READ), timeout=90, what="the WhatsApp read"
    )
    [message] = [m for m in whatsapp.messages() if m["to"] == ON_WHATSAPP.removeprefix("+")]
    assert message["template"] == {"name": "cakra_notice", "language": "id"}
    assert on_whatsapp.verification_code in message["text"]
    assert set(read.receipts.values_list("event", flat=True)) == {"sent", "delivered", "read"}
    assert whatsapp.received()[str(read.id)] == 1
    assert set(whatsapp.received().values()) == {1}  # no message twice

    # Not on WhatsApp: failed (131026) by webhook, then the SMS over SMPP, delivered by deliver_sm.
    sms = wait_for(
        lambda: _delivery(not_on_whatsapp, "sms", Delivery.Status.DELIVERED), timeout=120, what="the SMS receipt"
    )
    failed = Delivery.objects.get(notice=not_on_whatsapp, channel="whatsapp")
    assert failed.status == Delivery.Status.FAILED_PERMANENT
    [text] = [m.text for m in smsc.store.messages() if m.recipient == NOT_ON_WHATSAPP.removeprefix("+")]
    assert text.startswith("ETLE-PMJ: ")
    assert not_on_whatsapp.verification_code in text
    timeline = [(entry.event, entry.channel, entry.to_channel) for entry in notice_timeline(notice=not_on_whatsapp)]
    assert ("delivery.fallback", "whatsapp", "sms") in timeline
    assert sms.receipts.filter(event="delivered").exists()
    assert not Delivery.objects.filter(notice=not_on_whatsapp, channel="email").exclude(status="planned").exists()

    # The citizen replies to the official number: one automatic answer, in the window.
    whatsapp.inbound(sender=ON_WHATSAPP, text="Apakah pesan ini asli?", phone_number_id=PHONE_NUMBER_ID)
    answered = wait_for(
        lambda: InboundMessage.objects.filter(reply_status="sent").first(), timeout=60, what="the automatic answer"
    )
    answers = [m for m in whatsapp.messages() if m["type"] == "text" and m["to"] == ON_WHATSAPP.removeprefix("+")]
    assert len(answers) == 1
    assert "nomor WhatsApp resmi" in answers[0]["text"]
    assert answered.reply_reference == answers[0]["wamid"]
