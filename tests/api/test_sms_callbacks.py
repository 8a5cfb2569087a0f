"""The Twilio-style SMS status callback: signed callbacks apply once; anything
unsigned, wrongly signed, altered, oversized or malformed is refused and changes nothing."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone

import cakra.api.sms_callbacks as callbacks_api
from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.security.ratelimit import Limit
from cakra.security.signing import twilio_signature
from tests.factories import make_notice

NAME = "gw"
PATH = f"/api/v1/receipts/sms/{NAME}"
# The public address the gateway was given: what it signs, whatever Host the request carries.
PUBLIC_URL = f"https://etle.korlantas.polri.go.id{PATH}"
TOKEN = "0123456789abcdef0123456789abcdef-sms"
OTHER_TOKEN = "fedcba9876543210fedcba9876543210-sms"
SID = "SM0123456789abcdef0123456789abcdef"
NUMBER = "+6281234567890"


@pytest.fixture(autouse=True)
def _callbacks(settings):
    settings.CAKRA_SMS_CALLBACKS = {
        NAME: {"PROVIDER": "sms-http", "AUTH_TOKEN": TOKEN, "URL": PUBLIC_URL},
        "short": {"PROVIDER": "sms-http", "AUTH_TOKEN": "too-short"},
    }


@pytest.fixture
def delivery(vehicle, pre_validated_key, region):
    """A delivery the gateway accepted as SID (the channel does not matter to the matching)."""
    key, _token = pre_validated_key
    notice = make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id="CAP-SMS-CALLBACK-1",
        camera_id="CAM-5",
        captured_at=datetime.fromisoformat("2026-11-28T10:00:00+07:00"),
        location="Jl. M.H. Thamrin, Jakarta Pusat",
    )
    delivery = notice.deliveries.get(channel="email")
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENT, provider="sms-http", provider_reference=SID, sent_at=timezone.now()
    )
    delivery.refresh_from_db()
    return delivery


def _params(status="delivered", *, sid=SID, **extra):
    params = {
        "AccountSid": "AC" + "c4a7" * 8,
        "ApiVersion": "2010-04-01",
        "From": "ETLE-PMJ",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": NUMBER,
    }
    params.update(extra)
    return params


def _post(client, params, *, token=TOKEN, url=PUBLIC_URL, signature=None, body=None, content_type=None):
    headers = {}
    if signature is None:
        signature = twilio_signature(auth_token=token, url=url, params=params)
    if signature:
        headers["X-Twilio-Signature"] = signature
    return client.post(
        PATH,
        data=urlencode(params).encode() if body is None else body,
        content_type=content_type or "application/x-www-form-urlencoded",
        headers=headers,
    )


def _snapshot(delivery):
    row = Delivery.objects.values("status", "updated_at", "delivered_at", "last_error").get(pk=delivery.pk)
    return row, DeliveryReceipt.objects.count(), AuditEvent.objects.count()


# --- the signature ----------------------------------------------------------------------------------
def test_the_signature_is_twilios_documented_example():
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }

    signature = twilio_signature(auth_token="12345", url="https://mycompany.com/myapp.php?foo=1&bar=2", params=params)

    assert signature == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


# --- valid callbacks ---------------------------------------------------------------------------------
def test_a_signed_delivered_callback_applies(client, delivery):
    response = _post(client, _params("delivered"))

    assert response.status_code == 200
    assert response.json() == {"event_id": f"delivered:{SID}", "outcome": "applied"}
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED
    receipt = DeliveryReceipt.objects.get()
    assert (receipt.provider, receipt.event_id, receipt.event) == ("sms-http", f"delivered:{SID}", "delivered")


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_undelivered_and_failed_fail_the_delivery_with_the_status_and_code_only(client, delivery, status):
    response = _post(client, _params(status, ErrorCode="30003"))

    assert response.status_code == 200
    assert response.json()["outcome"] == "applied"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    receipt = DeliveryReceipt.objects.get()
    assert (receipt.event, receipt.detail) == ("failed", f"{status} 30003")
    assert NUMBER not in delivery.last_error
    assert "30003" in delivery.last_error


@pytest.mark.parametrize("status", ["queued", "sending"])
def test_queued_and_sending_are_acknowledged_and_store_nothing(client, delivery, status):
    before = _snapshot(delivery)

    response = _post(client, _params(status))

    assert response.status_code == 200
    assert response.json() == {"event_id": "", "outcome": "ignored"}
    assert _snapshot(delivery) == before


def test_a_replayed_callback_is_a_duplicate_and_changes_nothing(client, delivery):
    params = _params("delivered")
    assert _post(client, params).status_code == 200
    before = _snapshot(delivery)

    response = _post(client, params)

    assert response.status_code == 200
    assert response.json()["outcome"] == "duplicate"
    assert _snapshot(delivery) == before


def test_sent_after_delivered_is_stored_and_moves_nothing_back(client, delivery):
    assert _post(client, _params("delivered")).status_code == 200

    response = _post(client, _params("sent"))

    assert response.status_code == 200
    assert response.json() == {"event_id": f"sent:{SID}", "outcome": "ignored_older"}
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED
    assert DeliveryReceipt.objects.count() == 2


def test_delivered_after_undelivered_does_not_revive_the_delivery(client, delivery):
    assert _post(client, _params("undelivered", ErrorCode="30003")).status_code == 200

    response = _post(client, _params("delivered"))

    assert response.json()["outcome"] == "ignored_older"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT


def test_csrf_does_not_apply_to_this_machine_endpoint(delivery):
    # No cookies, no session: the signature is the authentication.
    response = _post(Client(enforce_csrf_checks=True), _params("delivered"))

    assert response.status_code == 200


# --- unknown references --------------------------------------------------------------------------------
def test_an_unknown_sid_is_answered_503_with_retry_after_so_the_gateway_retries(client, delivery):
    before = _snapshot(delivery)

    response = _post(client, _params("delivered", sid="SMffffffffffffffffffffffffffffffff"))

    assert response.status_code == 503
    assert response["Retry-After"] == str(callbacks_api.UNKNOWN_REFERENCE_RETRY_AFTER_SECONDS)
    assert response.json()["error"]["code"] == "unknown_reference"
    assert _snapshot(delivery) == before


# --- refused: authentication ----------------------------------------------------------------------------------
def _refusals(client, delivery):
    params = _params("delivered")
    good = twilio_signature(auth_token=TOKEN, url=PUBLIC_URL, params=params)
    altered = {**params, "MessageStatus": "failed", "ErrorCode": "30003"}
    return {
        "missing": _post(client, params, signature=""),
        "malformed": _post(client, params, signature="not base64 at all"),
        "wrong token": _post(client, params, token=OTHER_TOKEN),
        "body altered": _post(client, altered, signature=good),
        "parameter added": _post(client, {**params, "Extra": "1"}, signature=good),
        # Signed for the address the request reached (the Host header), not the configured one.
        "url altered": _post(client, params, url=f"http://testserver{PATH}"),
        "other callback's url": _post(client, params, url=PUBLIC_URL.replace("/gw", "/other")),
        "scheme altered": _post(client, params, url=PUBLIC_URL.replace("https://", "http://")),
    }


def test_every_bad_signature_is_refused_with_one_answer_and_nothing_changes(client, delivery):
    before = _snapshot(delivery)

    responses = _refusals(client, delivery)

    assert {label: r.status_code for label, r in responses.items()} == dict.fromkeys(responses, 401)
    assert len({r.content for r in responses.values()}) == 1
    assert _snapshot(delivery) == before


@pytest.mark.parametrize("name", ["unknown", "short"])
def test_an_unknown_or_misconfigured_callback_is_refused_like_a_bad_signature(client, delivery, name):
    params = _params("delivered")
    signature = twilio_signature(auth_token="too-short", url=f"https://x/api/v1/receipts/sms/{name}", params=params)

    response = client.post(
        f"/api/v1/receipts/sms/{name}",
        data=urlencode(params),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )

    assert response.status_code == 401
    assert response.content == _post(client, params, signature="").content
    assert not DeliveryReceipt.objects.exists()


def test_repeated_failures_from_one_client_are_rate_limited(client, delivery, monkeypatch, clock):
    clock.advance_to_window_start(60)
    monkeypatch.setattr(callbacks_api, "AUTH_FAILURE_LIMIT", Limit(scope="sms-callback-test", count=3, seconds=60))

    statuses = [_post(client, _params(), token=OTHER_TOKEN).status_code for _ in range(4)]

    assert statuses == [401, 401, 401, 429]
    assert not DeliveryReceipt.objects.exists()


# --- refused: bad input ------------------------------------------------------------------------------------
def test_an_oversize_body_is_refused_before_it_is_read(client, delivery):
    params = _params("delivered", Padding="x" * callbacks_api.MAX_CALLBACK_BYTES)

    response = _post(client, params)

    assert response.status_code == 413
    assert not DeliveryReceipt.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"MessageSid=SM1&MessageStatus", 400, "malformed_form"),  # a field without "="
        (b"MessageSid=SM1&&MessageStatus=sent", 400, "malformed_form"),
        (b"MessageSid=SM1&MessageStatus=sent&MessageStatus=delivered", 400, "malformed_form"),  # repeated
        (b"MessageSid=SM1&MessageStatus=%ff", 400, "malformed_form"),  # not UTF-8
    ],
)
def test_a_malformed_body_is_refused_and_stores_nothing(client, delivery, body, status, code):
    response = _post(client, {}, signature="A" * 27 + "=", body=body)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert not DeliveryReceipt.objects.exists()


def test_a_body_not_declared_as_a_form_is_refused(client, delivery):
    params = _params("delivered")

    response = _post(client, params, body=b'{"MessageSid": "SM1"}', content_type="application/json")

    assert response.status_code == 415
    assert not DeliveryReceipt.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"MessageStatus": "exploded"}, "MessageStatus"),
        ({"MessageStatus": ""}, "MessageStatus"),
        ({"MessageSid": "SM-<script>"}, "MessageSid"),
        ({"MessageSid": ""}, "MessageSid"),
        ({"ErrorCode": "30003; DROP"}, "ErrorCode"),
    ],
)
def test_signed_fields_that_do_not_fit_are_refused_with_the_field_named(client, delivery, changes, field):
    before = _snapshot(delivery)

    response = _post(client, {**_params("failed"), **changes})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert _snapshot(delivery) == before


# --- logs ---------------------------------------------------------------------------------------------------
def test_logs_carry_ids_never_the_number_or_the_token(client, delivery, caplog):
    caplog.set_level(logging.DEBUG)

    _post(client, _params("undelivered", ErrorCode="30003"))
    _post(client, _params("delivered"), token=OTHER_TOKEN)
    _post(client, _params("delivered", sid="SMffffffffffffffffffffffffffffffff"))

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert SID in logged
    assert "sms_callback.received" in logged
    assert NUMBER not in logged
    assert NUMBER.removeprefix("+") not in logged
    assert TOKEN not in logged
