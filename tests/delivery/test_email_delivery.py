"""Sending a notice by email, end to end through the real SMTP sink."""

from __future__ import annotations

import logging
import re

from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.enforcement.models import Notice
from cakra.enforcement.numbers import notice_number_display
from cakra.registry.models import ContactPoint, Owner
from tests.delivery.helpers import next_attempt_is_the_last, send


def _send(delivery):
    send(delivery)


def _only_message(sink):
    messages = sink.messages()
    assert len(messages) == 1
    return messages[0]


def _owner_email(delivery):
    return ContactPoint.objects.get(pk=delivery.contact_point_id).value


def _events(action, object_id):
    return list(AuditEvent.objects.filter(action=action, object_id=str(object_id)))


def test_the_email_arrives_with_a_valid_dkim_signature_of_the_region_domain(mail_sink, delivery, region):
    _send(delivery)

    message = _only_message(mail_sink)
    assert message.dkim.passed
    assert message.dkim.domain == region.email_from_address.rpartition("@")[2]
    assert message.parsed()["DKIM-Signature"] is not None


def test_headers_identify_the_region_and_mark_the_mail_automatic(mail_sink, delivery, region):
    _send(delivery)

    parsed = _only_message(mail_sink).parsed()
    assert parsed["From"].addresses[0].display_name == region.email_from_name
    assert parsed["From"].addresses[0].addr_spec == region.email_from_address
    assert parsed["To"].addresses[0].addr_spec == _owner_email(delivery)
    assert parsed["Message-ID"] == f"<{delivery.id}@{region.email_from_address.rpartition('@')[2]}>"
    assert parsed["Date"] is not None
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Content-Language"] == "id, en"
    assert parsed["List-Unsubscribe"] is None  # a legal notice, not a mailing
    assert delivery.provider_reference == parsed["Message-ID"]


def test_the_email_has_a_text_and_an_html_alternative_and_no_attachment(mail_sink, delivery):
    _send(delivery)

    parsed = _only_message(mail_sink).parsed()
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert list(parsed.iter_attachments()) == []
    assert all(part.get_content_disposition() is None for part in parsed.walk())


def test_the_email_carries_exactly_one_link_to_the_portal_lookup_with_the_number(mail_sink, delivery, notice, settings):
    _send(delivery)

    message = _only_message(mail_sink)
    expected = f"{settings.CAKRA_PORTAL_BASE_URL}/cek/?n={notice.number}"
    text, html = message.text_body(), message.html_body()
    assert text.count("http") == 1
    assert re.findall(r"https?://\S+", text) == [expected]
    assert html.count("http") == 1
    assert html.lower().count("href") == 1
    assert re.findall(r'href="([^"]*)"', html) == [expected]
    assert "<img" not in html.lower()  # no remote images, no tracking pixel
    assert "src=" not in html.lower()


def test_the_email_tells_the_notice_facts_in_bahasa_indonesia_then_english(mail_sink, delivery, notice, settings):
    _send(delivery)

    text = _only_message(mail_sink).text_body()
    for fact in (
        notice_number_display(notice.number),
        "B 1234 XYZ",
        "Pasal 287(2) UU 22/2009",
        "Melanggar lampu lalu lintas",
        "Running a red light",
        "Rp500.000",
        notice.verification_code,
        "Jl. Jend. Sudirman (depan FX Sudirman), Jakarta Pusat",
        "Sabtu, 28 November 2026, pukul 08.05 WIB",
        "Saturday 28 November 2026, 08:05 WIB",
        settings.CAKRA_OFFICIAL_DOMAIN,
    ):
        assert fact in text, fact
    assert text.index("Yth. Pemilik kendaraan B 1234 XYZ") < text.index("Dear owner of vehicle B 1234 XYZ")
    # The anti-scam footer, in both languages.
    assert "APK" in text
    assert "OTP" in text
    assert "rekening pribadi" in text
    assert "personal bank account" in text


def test_the_email_names_no_owner_and_no_contact_details(mail_sink, delivery, vehicle):
    _send(delivery)

    message = _only_message(mail_sink)
    owner = Owner.objects.get(pk=vehicle.owner_id)
    contacts = {c.kind: c.value for c in ContactPoint.objects.filter(owner=owner)}
    bodies = message.subject + message.text_body() + message.html_body()
    for personal in (owner.name, owner.nik, contacts["email"], contacts["postal"], contacts["mobile"]):
        assert personal not in bodies
    assert contacts["email"].split("@")[0] not in bodies


def test_markup_from_the_camera_feed_never_reaches_the_email(mail_sink, delivery, notice):
    # Intake refuses such a location; a row stored around it is withheld when rendered.
    notice.violation.location = 'Jl. <script>alert(1)</script> & "Gatot"'
    notice.violation.save(update_fields=["location"])

    _send(delivery)

    message = _only_message(mail_sink)
    assert "script" not in message.html_body()
    assert "script" not in message.text_body()


def test_a_sent_delivery_records_one_attempt_its_audit_event_and_notifies_the_notice(mail_sink, delivery, notice):
    _send(delivery)

    assert delivery.status == Delivery.Status.SENT
    assert delivery.attempt_count == 1
    assert delivery.sent_at is not None
    assert delivery.provider == "smtp"
    assert delivery.last_error == ""
    attempt = delivery.attempts.get()
    assert (attempt.number, attempt.outcome, attempt.provider) == (1, "sent", "smtp")
    assert attempt.provider_reference == delivery.provider_reference
    assert attempt.duration_ms >= 0
    [event] = _events("delivery.sent", delivery.id)
    assert event.data["notice"] == str(notice.id)
    assert event.data["attempt"] == 1
    notice.refresh_from_db()
    assert notice.status == Notice.Status.NOTIFIED
    assert len(_events("notice.notified", notice.id)) == 1


def test_sending_twice_sends_once(mail_sink, delivery):
    _send(delivery)
    _send(delivery)

    assert len(mail_sink.messages()) == 1
    assert delivery.attempt_count == 1
    assert delivery.attempts.count() == 1
    assert len(_events("delivery.sent", delivery.id)) == 1


def test_a_planned_delivery_is_not_sent(mail_sink, delivery):
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.PLANNED)

    _send(delivery)

    assert mail_sink.messages() == []
    assert delivery.status == Delivery.Status.PLANNED
    assert delivery.attempt_count == 0


def test_a_cancelled_notice_is_not_sent(mail_sink, delivery, notice):
    Notice.objects.filter(pk=notice.pk).update(status=Notice.Status.CANCELLED)

    _send(delivery)

    assert mail_sink.messages() == []
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.attempts.count() == 0


def test_smtp_server_down_fails_temporarily_records_the_attempt_and_asks_to_retry(smtp_down, delivery, notice):
    assert send(delivery).retries

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_TEMPORARY
    assert delivery.last_error == "smtp connection failed: ConnectionRefusedError"
    attempt = delivery.attempts.get()
    assert attempt.outcome == DeliveryAttempt.Outcome.RETRYABLE
    assert attempt.error == delivery.last_error
    [event] = _events("delivery.failed", delivery.id)
    assert event.data["final"] is False
    notice.refresh_from_db()
    assert notice.status == Notice.Status.ISSUED


def test_a_temporary_failure_is_retried_and_then_succeeds(settings, closed_port, mail_sink, email_relay, delivery):
    working = settings.CAKRA_PROVIDERS
    email_relay(PORT=closed_port)
    assert send(delivery).retries
    settings.CAKRA_PROVIDERS = working

    _send(delivery)

    assert delivery.status == Delivery.Status.SENT
    assert [(a.number, a.outcome) for a in delivery.attempts.order_by("number")] == [(1, "retryable"), (2, "sent")]
    assert len(mail_sink.messages()) == 1


def test_a_recipient_refused_with_550_fails_permanently_without_retry(mail_sink, delivery):
    contact = ContactPoint.objects.get(pk=delivery.contact_point_id)
    contact.value = "bounce.owner@example.co.id"
    contact.save(update_fields=["value"])

    assert not send(delivery).retries

    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    assert delivery.last_error == "smtp 550 at rcpt"
    assert delivery.attempts.get().outcome == DeliveryAttempt.Outcome.PERMANENT
    [event] = _events("delivery.failed", delivery.id)
    assert event.data["final"] is True
    assert "bounce.owner" not in str(event.data)
    assert mail_sink.messages() == []


def test_a_rate_limited_relay_throttles_and_asks_to_retry_later(mail_sink, delivery):
    contact = ContactPoint.objects.get(pk=delivery.contact_point_id)
    contact.value = "throttle@example.co.id"
    contact.save(update_fields=["value"])

    report = send(delivery)
    assert report.retries

    assert report.retries[0].retry_after == 60
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_TEMPORARY
    assert delivery.attempts.get().outcome == DeliveryAttempt.Outcome.THROTTLED


def test_the_last_retry_failing_ends_permanent_with_an_audit_event(smtp_down, delivery):
    assert send(delivery).retries

    next_attempt_is_the_last(delivery)
    send(delivery)  # no retry asked: nothing left to retry

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    assert delivery.attempts.count() == 2
    final = _events("delivery.failed", delivery.id)[-1]
    assert final.data["final"] is True
    assert final.data["status"] == Delivery.Status.FAILED_PERMANENT


def test_a_rendering_failure_after_the_claim_is_recorded_not_left_sending(mail_sink, delivery, email_relay):
    email_relay(SECURITY="carrier-pigeon")  # adapter cannot be built

    assert send(delivery).retries

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_TEMPORARY
    assert delivery.last_error == "internal ImproperlyConfigured"


def test_logs_of_a_send_carry_ids_but_no_address_or_name(mail_sink, delivery, vehicle, caplog):
    caplog.set_level(logging.DEBUG)

    _send(delivery)

    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert str(delivery.id) in logged
    assert "delivery.batch_recorded" in logged
    owner = Owner.objects.get(pk=vehicle.owner_id)
    assert _owner_email(delivery) not in logged
    assert "@example.co.id" not in logged
    assert owner.name not in logged


def test_logs_of_a_refused_recipient_carry_no_address(mail_sink, delivery, caplog):
    caplog.set_level(logging.DEBUG)
    contact = ContactPoint.objects.get(pk=delivery.contact_point_id)
    contact.value = "bounce.someone@example.co.id"
    contact.save(update_fields=["value"])

    _send(delivery)

    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert "provider.send_failed" in logged
    assert "bounce.someone" not in logged
