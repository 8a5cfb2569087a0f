"""Meta's WhatsApp webhook: the verification handshake, signed status updates
applied idempotently and in any order, and everything unsigned, wrongly
signed, oversized or malformed refused with nothing changed."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime

import pytest
from django.utils import timezone

import cakra.api.whatsapp as whatsapp_api
from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryReceipt, InboundMessage
from cakra.security.ratelimit import Limit
from tests.factories import make_notice

URL = "/api/v1/webhooks/whatsapp/meta-test"
SECRET = "0123456789abcdef0123456789abcdef"  # Meta's app secrets: 32 hex characters
VERIFY_TOKEN = "verify-token-for-the-webhook-tests"
WAMID = "wamid.HBgNNjI4MTIzNDU2Nzg5MBUCABEYEjA5RjQ2QkM3QzBBNkU5RkYwNwA="
PHONE_NUMBER_ID = "106540352242922"
CITIZEN = "6281234567890"


@pytest.fixture(autouse=True)
def _webhooks(settings):
    settings.CAKRA_WHATSAPP_WEBHOOKS = {
        "meta-test": {"PROVIDER": "whatsapp", "APP_SECRET": SECRET, "VERIFY_TOKEN": VERIFY_TOKEN},
        "short-secret": {"PROVIDER": "whatsapp", "APP_SECRET": "short", "VERIFY_TOKEN": VERIFY_TOKEN},
    }
    settings.CAKRA_WHATSAPP_WEBHOOK_MAX_BYTES = 64 * 1024


@pytest.fixture
def delivery(vehicle, pre_validated_key):
    """A notice's delivery handed to WhatsApp (sent, with its wamid)."""
    key, _token = pre_validated_key
    notice = make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id="CAP-WA-1",
        camera_id="CAM-9",
        captured_at=datetime.fromisoformat("2026-11-28T10:00:00+07:00"),
        location="Jl. M.H. Thamrin, Jakarta Pusat",
    )
    delivery = notice.deliveries.get(channel="email")
    Delivery.objects.filter(pk=delivery.pk).update(
        channel="whatsapp", status=Delivery.Status.SENT, provider="whatsapp", provider_reference=WAMID,
        sent_at=timezone.now(),
    )  # fmt: skip
    delivery.refresh_from_db()
    return delivery


def _status(status="delivered", *, wamid=WAMID, timestamp=None, **extra):
    item = {
        "id": wamid,
        "status": status,
        "timestamp": timestamp if isinstance(timestamp, str) else str(int(timestamp or time.time())),
        "recipient_id": CITIZEN,
        "biz_opaque_callback_data": "whatever",
        "conversation": {"id": "c1", "origin": {"type": "utility"}},
        "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility"},
    }
    item.update(extra)
    return item


def _envelope(*, statuses=(), messages=(), field="messages"):
    value: dict[str, object] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "628111500669", "phone_number_id": PHONE_NUMBER_ID},
    }
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["contacts"] = [{"profile": {"name": "Budi Santoso"}, "wa_id": CITIZEN}]
        value["messages"] = list(messages)
    entry = {"id": "102290129340398", "changes": [{"value": value, "field": field}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def _sign(body, secret=SECRET):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(client, body, *, signature=None, url=URL, content_type="application/json"):
    headers = {}
    signature = _sign(body) if signature is None else signature
    if signature:
        headers["X-Hub-Signature-256"] = signature
    return client.post(url, data=body, content_type=content_type, headers=headers)


def _snapshot(delivery):
    row = Delivery.objects.values("status", "updated_at", "delivered_at", "read_at", "last_error").get(pk=delivery.pk)
    return row, DeliveryReceipt.objects.count(), AuditEvent.objects.count(), InboundMessage.objects.count()


# --- the verification handshake -----------------------------------------------------------------
def _verify(client, *, url=URL, **params):
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444", **params}
    return client.get(url, {key: value for key, value in query.items() if value is not None})


def test_the_handshake_echoes_the_challenge_as_plain_text(client, db):
    response = _verify(client)

    assert response.status_code == 200
    assert response.content == b"1158201444"
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.verify_token": "not-the-token"},
        {"hub.verify_token": None},
        {"hub.mode": "unsubscribe"},
        {"hub.mode": None},
        {"hub.verify_token": VERIFY_TOKEN[:-1]},
    ],
)
def test_a_wrong_or_missing_token_or_mode_is_refused(client, db, params):
    response = _verify(client, **params)

    assert response.status_code == 403
    assert b"1158201444" not in response.content


def test_an_unknown_or_misconfigured_webhook_refuses_the_handshake(client, db):
    assert _verify(client, url="/api/v1/webhooks/whatsapp/nobody").status_code == 403
    assert _verify(client, url="/api/v1/webhooks/whatsapp/short-secret").status_code == 403


@pytest.mark.parametrize("challenge", ["<script>alert(1)</script>", "1" * 129, "", "a b", "x\r\ny"])
def test_a_challenge_that_is_not_a_short_token_is_never_reflected(client, db, challenge):
    response = _verify(client, **{"hub.challenge": challenge or None})

    assert response.status_code == 400
    assert b"<script>" not in response.content
    assert response["Content-Type"] == "application/json"


# --- signed status updates --------------------------------------------------------------------------
def test_signed_statuses_apply_and_are_counted(client, delivery):
    response = _post(client, _envelope(statuses=[_status("sent"), _status("delivered"), _status("read")]))

    assert response.status_code == 200
    assert response.json() == {
        "statuses": 3,
        "applied": 2,
        "recorded": 0,
        "ignored_older": 1,  # "sent" tells nothing new: the delivery is sent already
        "duplicate": 0,
        "unknown_reference": 0,
        "messages": 0,
        "messages_recorded": 0,
        "messages_duplicate": 0,
        "skipped": 0,
        "ignored_changes": 0,
        "answer_statuses": 0,
    }
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.READ
    assert delivery.delivered_at is not None
    assert set(DeliveryReceipt.objects.values_list("provider", "event_id")) == {
        ("whatsapp", f"sent:{WAMID}"),
        ("whatsapp", f"delivered:{WAMID}"),
        ("whatsapp", f"read:{WAMID}"),
    }


def test_read_without_delivered_implies_delivered(client, delivery):
    read_at = int(time.time()) - 60

    assert _post(client, _envelope(statuses=[_status("read", timestamp=read_at)])).status_code == 200

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.READ
    assert delivery.delivered_at == delivery.read_at == datetime.fromtimestamp(read_at, tz=UTC)


def test_out_of_order_statuses_never_move_a_delivery_backwards(client, delivery):
    _post(client, _envelope(statuses=[_status("read")]))
    later = _post(client, _envelope(statuses=[_status("delivered"), _status("failed", errors=[{"code": 131026}])]))

    assert later.json()["ignored_older"] == 2
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.READ
    assert DeliveryReceipt.objects.count() == 3  # every report kept for the timeline


def test_a_failed_status_fails_the_delivery_with_a_cleaned_reason(client, delivery):
    failed = _status(
        "failed", errors=[{"code": 131026, "title": f"Message undeliverable to +{CITIZEN}", "message": "x"}]
    )

    assert _post(client, _envelope(statuses=[failed])).json()["applied"] == 1

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    detail = DeliveryReceipt.objects.get().detail
    assert detail.startswith("131026 Message undeliverable")
    assert CITIZEN not in detail
    assert CITIZEN not in delivery.last_error


def test_a_replayed_body_changes_nothing(client, delivery):
    body = _envelope(statuses=[_status("delivered")])
    assert _post(client, body).status_code == 200
    before = _snapshot(delivery)

    again = _post(client, body)

    assert again.status_code == 200
    assert again.json()["duplicate"] == 1
    assert _snapshot(delivery) == before


def test_one_broken_status_does_not_fail_the_batch(client, delivery):
    broken = [{"id": WAMID, "status": "delivered"}, _status("warning"), "not an object", _status(timestamp="soon")]
    body = _envelope(statuses=[*broken[:2], _status("delivered"), *broken[2:]])

    response = _post(client, body)

    assert response.status_code == 200
    assert (response.json()["applied"], response.json()["skipped"]) == (1, 4)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED


def test_other_webhook_fields_are_counted_and_ignored(client, delivery):
    response = _post(client, _envelope(statuses=[_status("delivered")], field="message_template_status_update"))

    assert response.status_code == 200
    assert response.json()["ignored_changes"] == 1
    assert DeliveryReceipt.objects.count() == 0


# --- statuses that race the record of the send ---------------------------------------------------
def test_an_unknown_young_wamid_asks_for_a_redelivery_and_stores_nothing(client, delivery):
    before = _snapshot(delivery)

    response = _post(client, _envelope(statuses=[_status("delivered", wamid="wamid.not-recorded-yet")]))

    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert _snapshot(delivery) == before


def test_a_known_status_beside_a_young_unknown_one_is_kept_and_redelivery_is_a_duplicate(client, delivery):
    body = _envelope(statuses=[_status("delivered"), _status("delivered", wamid="wamid.racing")])

    assert _post(client, body).status_code == 503
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED  # the known one is applied at once
    before = _snapshot(delivery)

    again = _post(client, body)  # Meta's redelivery

    assert again.status_code == 503  # the other is still unknown and young
    assert _snapshot(delivery) == before  # the known one is a duplicate now


def test_an_unknown_old_wamid_is_not_ours_and_answered_200(client, delivery):
    old = int(time.time()) - 11 * 60

    response = _post(client, _envelope(statuses=[_status("delivered", wamid="wamid.never-ours", timestamp=old)]))

    assert response.status_code == 200
    assert response.json()["unknown_reference"] == 1
    assert DeliveryReceipt.objects.count() == 0


def test_statuses_of_automatic_answers_are_counted_not_waited_for(client, delivery):
    before = _snapshot(delivery)
    answer = _status("read", wamid="wamid.an-answer", biz_opaque_callback_data="reply:01a25063-a5b8-715c")

    response = _post(client, _envelope(statuses=[answer]))

    assert response.status_code == 200  # young and unknown as a delivery, but no delivery will ever hold it
    assert response.json()["answer_statuses"] == 1
    assert response.json()["unknown_reference"] == 0
    assert _snapshot(delivery) == before


# --- refusals --------------------------------------------------------------------------------------
def test_missing_wrong_malformed_signatures_and_unknown_names_get_the_same_401(client, delivery):
    body = _envelope(statuses=[_status("delivered")])
    before = _snapshot(delivery)

    answers = [
        _post(client, body, signature=""),
        _post(client, body, signature=_sign(body, "another-secret-of-the-same-length-")),
        _post(client, body, signature=_sign(body).upper()),
        _post(client, body, signature=_sign(body)[7:]),
        _post(client, body, signature="sha1=" + hashlib.sha1(body).hexdigest()),  # noqa: S324 - a wrong scheme
        _post(client, body, url="/api/v1/webhooks/whatsapp/nobody"),
        _post(client, body, signature=_sign(body, "short"), url="/api/v1/webhooks/whatsapp/short-secret"),
    ]

    assert {response.status_code for response in answers} == {401}
    assert len({response.content for response in answers}) == 1
    assert _snapshot(delivery) == before


def test_a_body_altered_after_signing_is_refused(client, delivery):
    body = _envelope(statuses=[_status("delivered")])
    altered = body.replace(b'"delivered"', b'"read"')

    response = _post(client, altered, signature=_sign(body))

    assert response.status_code == 401
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT


def test_repeated_failures_from_one_address_are_answered_429(client, delivery, monkeypatch, clock):
    monkeypatch.setattr(whatsapp_api, "AUTH_FAILURE_LIMIT", Limit(scope="wa-test-failures", count=2, seconds=60))
    body = _envelope(statuses=[_status("delivered")])

    codes = [_post(client, body, signature="sha256=" + "0" * 64).status_code for _ in range(3)]

    assert codes == [401, 401, 429]


def test_an_oversized_body_is_refused_before_the_signature(client, delivery, settings):
    settings.CAKRA_WHATSAPP_WEBHOOK_MAX_BYTES = 100
    body = _envelope(statuses=[_status("delivered")])

    response = _post(client, body)

    assert response.status_code == 413
    assert DeliveryReceipt.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"object": "whatsapp_business_account", "object": "page", "entry": []}', 400),  # duplicate key
        (b'{"object": "page", "entry": [{"id": "1", "changes": []}]}', 400),
        (b'{"object": "whatsapp_business_account", "entry": []}', 400),
        (b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages"}]}]}', 400),
        (b"[]", 400),
    ],
)
def test_a_signed_body_that_is_not_an_envelope_is_400_and_stores_nothing(client, delivery, body, status):
    before = _snapshot(delivery)

    response = _post(client, body)

    assert response.status_code == status
    assert _snapshot(delivery) == before


def test_a_signed_body_not_declared_json_is_415(client, delivery):
    body = _envelope(statuses=[_status("delivered")])

    assert _post(client, body, content_type="text/plain").status_code == 415


# --- logs ------------------------------------------------------------------------------------------
def test_logs_carry_counts_never_numbers_texts_or_signatures(client, delivery, caplog):
    caplog.set_level(logging.DEBUG)
    message = {
        "from": CITIZEN,
        "id": "wamid.inbound-1",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": "Apakah surat ini asli? Rahasia-teks-123"},
    }
    body = _envelope(statuses=[_status("delivered")], messages=[message])

    _post(client, body)
    _post(client, body, signature="sha256=" + "1" * 64)

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert "whatsapp_webhook.batch" in logged
    for secret in (CITIZEN, "81234567890", "Rahasia-teks-123", "Budi Santoso", _sign(body)[7:], SECRET):
        assert secret not in logged
