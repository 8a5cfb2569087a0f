"""End to end through real processes: the API over HTTP, a real Celery worker
process on the configured broker (filesystem on the embedded default,
RabbitMQ under DATABASE_URL/CELERY_BROKER_URL), SMTP with DKIM into the sink,
and the portal showing the notice."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from kombu import Queue

from cakra.backoffice.decisions import violation_validate
from cakra.config.celery import app as celery_app
from cakra.delivery.models import Delivery
from cakra.demo.images import capture_jpeg
from cakra.enforcement.models import Evidence, Notice, Violation
from cakra.enforcement.numbers import notice_number_display
from cakra.ops.management.commands.run import WORKER_QUEUES
from cakra.registry.models import ContactPoint
from cakra.simulators.smtp import MailSink, SinkMessage
from tests.e2e.processes import celery_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sink(tmp_path, settings):
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
    ) as mail_sink:
        yield mail_sink


@pytest.fixture
def worker(sink):
    # Earlier transactional tests may have left triggers for rows that are gone.
    with celery_app.connection_for_write() as connection:
        for name in WORKER_QUEUES.split(","):
            Queue(name).bind(connection.default_channel).declare()
            Queue(name).bind(connection.default_channel).purge()
    smtp = {"CAKRA_SMTP_HOST": "127.0.0.1", "CAKRA_SMTP_PORT": str(sink.smtp_port), "CAKRA_SMTP_SECURITY": "none"}
    with celery_worker(queues=WORKER_QUEUES, extra_env=smtp) as process:
        yield process


def post_violation(base_url: str, token: str, *, plate: str, capture_id: str) -> tuple[int, dict[str, Any]]:
    captured_at = timezone.localtime() - timedelta(hours=2)
    image = capture_jpeg(
        plate=plate,
        colour="Merah",
        camera_id="JKT-0042",
        captured_at=captured_at,
        location="Jl. Jend. Sudirman, Jakarta Pusat",
        caption="Pasal 287(2)",
        seed=7,
    )
    body = json.dumps(
        {
            "capture_id": capture_id,
            "camera_id": "JKT-0042",
            "captured_at": captured_at.isoformat(),
            "location": "Jl. Jend. Sudirman, Jakarta Pusat",
            "plate": plate,
            "article": "287(2)",
            "evidence": [{"kind": "vehicle", "content_base64": base64.b64encode(image).decode()}],
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the live test server on loopback
        f"{base_url}/api/v1/violations",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def email_for(sink: MailSink, number: str) -> SinkMessage | None:
    grouped = notice_number_display(number)
    return next((m for m in sink.messages() if grouped in m.text_body() or number in m.text_body()), None)


def owner_email(notice: Notice) -> str:
    return str(ContactPoint.objects.get(owner=notice.owner, kind="email").value)


def test_pre_validated_capture_reaches_the_inbox_and_the_portal(live_server, sink, worker, vehicle, pre_validated_key):
    _key, token = pre_validated_key
    status, body = post_violation(live_server.url, token, plate="b1234xyz", capture_id="JKT-0042-E2E-1")
    assert status == 201, body
    assert body["status"] == "received"  # the API never tells whether a notice was issued
    number = Notice.objects.get(violation_id=body["id"]).number

    message = wait_for(lambda: email_for(sink, number), timeout=90, what="the notice email in the sink")
    notice = Notice.objects.get(number=number)
    assert message.dkim.passed, message.dkim
    assert owner_email(notice) in message.recipients
    assert notice.verification_code in message.text_body()

    delivery = wait_for(
        lambda: Delivery.objects.filter(notice=notice, status=Delivery.Status.SENT).first(),
        timeout=30,
        what="the delivery recorded as sent",
    )
    assert delivery.attempts.count() == 1
    assert Notice.objects.get(pk=notice.pk).status == Notice.Status.NOTIFIED
    # Issued at once (pre-validated): the display copy is asked of the worker on first view.
    evidence = Evidence.objects.get(violation__notice=notice)
    assert evidence.derived_at is None

    # The citizen checks the notice on the portal with number + plate.
    citizen = Client()
    answer = citizen.post("/cek/", {"number": notice_number_display(number), "plate": "B 1234 XYZ"})
    assert answer.status_code == 303
    page = citizen.get(answer["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert notice_number_display(number) in html
    assert notice.verification_code in html
    # The page never decodes: it says the photo is being prepared and a worker makes it.
    assert "Foto sedang diproses" in html
    wait_for(
        lambda: Evidence.objects.filter(pk=evidence.pk, derived_at__isnull=False).exists(),
        timeout=30,
        what="the evidence derivative made by the worker after the first view",
    )
    assert f"/notice/{notice.pk}/evidence/{evidence.pk}/" in citizen.get(answer["Location"]).content.decode()
    photo = citizen.get(f"/notice/{notice.pk}/evidence/{evidence.pk}/")
    assert photo.status_code == 200
    assert photo["Content-Type"] == "image/jpeg"
    assert photo.getvalue()[:3] == b"\xff\xd8\xff"

    call_command("audit", "verify")


def test_officer_validated_capture_reaches_the_inbox(live_server, sink, worker, vehicle, api_key, officer):
    _key, token = api_key
    status, body = post_violation(live_server.url, token, plate="B 1234 XYZ", capture_id="JKT-0042-E2E-2")
    assert status == 201, body
    assert body["status"] == "received"
    assert not Notice.objects.filter(violation_id=body["id"]).exists()
    assert not sink.messages()

    # Waiting for an officer: the worker makes the display copy the officer will look at.
    wait_for(
        lambda: Evidence.objects.filter(violation_id=body["id"], derived_at__isnull=False).exists(),
        timeout=30,
        what="the evidence derivative made by the worker",
    )
    notice = violation_validate(officer=officer, violation_id=body["id"])
    assert Violation.objects.get(pk=body["id"]).status == Violation.Status.VALIDATED

    message = wait_for(lambda: email_for(sink, notice.number), timeout=90, what="the notice email in the sink")
    assert message.dkim.passed
    assert owner_email(notice) in message.recipients
