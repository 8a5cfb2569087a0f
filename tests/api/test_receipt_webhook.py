"""The signed receipt webhook: valid batches apply; anything unsigned, wrongly
signed, stale, oversized or malformed is refused and changes nothing."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

import cakra.api.receipts as receipts_api
from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.registry.models import ContactPoint
from cakra.security.ratelimit import Limit
from cakra.security.signing import receipt_signature, receipt_signature_header
from tests.factories import make_notice

URL = "/api/v1/receipts/email/smtp-sink"
SECRET = "s3cret-for-the-receipt-webhook-tests-0123456789"
OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
REFERENCE = "<9d0e2a44-webhook-test@korlantas.polri.go.id>"


@pytest.fixture(autouse=True)
def _webhooks(settings):
    settings.CAKRA_RECEIPT_WEBHOOKS = {
        "smtp-sink": {"CHANNEL": "email", "PROVIDER": "smtp", "SECRET": SECRET},
        "sms-gateway": {"CHANNEL": "sms", "PROVIDER": "smtp", "SECRET": SECRET},
        "short-secret": {"CHANNEL": "email", "PROVIDER": "smtp", "SECRET": "too-short"},
    }


@pytest.fixture
def delivery(vehicle, pre_validated_key, region):
    """The notice's email delivery, accepted by the relay (sent, with its Message-ID)."""
    key, _token = pre_validated_key
    notice = make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id="CAP-WEBHOOK-1",
        camera_id="CAM-3",
        captured_at=datetime.fromisoformat("2026-11-28T10:00:00+07:00"),
        location="Jl. Gatot Subroto, Jakarta Selatan",
    )
    delivery = notice.deliveries.get(channel="email")
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENT, provider="smtp", provider_reference=REFERENCE, sent_at=timezone.now()
    )
    delivery.refresh_from_db()
    return delivery


def _event(event="delivered", *, event_id="evt-1", message_id=REFERENCE, detail="", **extra):
    item = {
        "event_id": event_id,
        "message_id": message_id,
        "event": event,
        "timestamp": timezone.now().isoformat(),
        "detail": detail,
    }
    item.update(extra)
    return item


def _body(events):
    return json.dumps(events).encode()


def _post(client, body, *, signature=None, secret=SECRET, url=URL, timestamp=None):
    headers = {}
    if signature is None:
        signature = receipt_signature_header(secret=secret, body=body, timestamp=timestamp)
    if signature:
        headers["X-Cakra-Signature"] = signature
    return client.post(url, data=body, content_type="application/json", headers=headers)


def _snapshot(delivery):
    row = Delivery.objects.values("status", "updated_at", "delivered_at", "last_error").get(pk=delivery.pk)
    return row, DeliveryReceipt.objects.count(), AuditEvent.objects.count()


# --- valid batches ------------------------------------------------------------------------------
def test_a_valid_signed_batch_applies_every_event_and_answers_per_event(client, delivery):
    body = _body([_event("delivered", event_id="e-1"), _event("opened", event_id="e-2")])

    response = _post(client, body)

    assert response.status_code == 200
    assert response.json() == {
        "received": 2,
        "applied": 2,
        "recorded": 0,
        "ignored_older": 0,
        "duplicate": 0,
        "unknown_reference": 0,
        "results": [{"event_id": "e-1", "outcome": "applied"}, {"event_id": "e-2", "outcome": "applied"}],
    }
    # The answer is built as plain JSON: it must stay what the OpenAPI schema documents.
    assert receipts_api.ReceiptBatchOut.model_validate(response.json()).model_dump() == response.json()
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.READ
    assert list(DeliveryReceipt.objects.order_by("id").values_list("provider", "event")) == [
        ("smtp", "delivered"),
        ("smtp", "read"),
    ]


def test_deferred_is_recorded_and_changes_no_status(client, delivery):
    response = _post(client, _body([_event("deferred", detail="451 greylisted")]))

    assert response.status_code == 200
    assert response.json()["recorded"] == 1
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert DeliveryReceipt.objects.get().detail == "451 greylisted"


def test_a_bounce_fails_the_delivery(client, delivery):
    response = _post(client, _body([_event("bounced", detail="550 5.1.1 mailbox unavailable")]))

    assert response.json()["applied"] == 1
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT


def test_an_unknown_reference_in_a_batch_is_reported_beside_the_others(client, delivery):
    body = _body([_event(event_id="e-1"), _event(event_id="e-2", message_id="<not-ours@example.com>")])

    response = _post(client, body)

    assert response.status_code == 200
    answer = response.json()
    assert (answer["applied"], answer["unknown_reference"]) == (1, 1)
    assert answer["results"][1] == {"event_id": "e-2", "outcome": "unknown_reference"}
    assert DeliveryReceipt.objects.count() == 1


def test_a_single_event_with_an_unknown_reference_is_404_and_stores_nothing(client, delivery):
    before = _snapshot(delivery)

    response = _post(client, _body([_event(message_id="<not-ours@example.com>")]))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_reference"
    assert response.json()["error"]["field"] == "[0].message_id"
    assert _snapshot(delivery) == before


def test_a_replayed_body_changes_nothing(client, delivery):
    body = _body([_event("delivered", event_id="e-1"), _event("bounced", event_id="e-2")])
    first = _post(client, body)
    after_first = _snapshot(delivery)

    replay = _post(client, body)

    assert first.json()["applied"] == 1  # the bounce after delivered is ignored
    assert replay.status_code == 200
    assert replay.json()["duplicate"] == 2
    assert _snapshot(delivery) == after_first


def test_a_rotated_secret_may_sign_beside_the_old_one(client, delivery):
    body = _body([_event()])
    moment = int(time.time())
    old = receipt_signature(secret=OTHER_SECRET, timestamp=moment, body=body)
    new = receipt_signature(secret=SECRET, timestamp=moment, body=body)

    response = _post(client, body, signature=f"t={moment},v1={old},v1={new}")

    assert response.status_code == 200


def test_unknown_fields_of_an_event_are_ignored_not_stored(client, delivery):
    response = _post(client, _body([_event(ip="203.0.113.9", useragent="Mail/1.0")]))

    assert response.status_code == 200
    assert response.json()["applied"] == 1


# --- refused: authentication -------------------------------------------------------------------------
# Far enough outside the 300 s window that the request's own clock, read a
# moment later and unrounded, cannot bring it back inside (the exact boundary
# is tested against a fixed clock below).
OUTSIDE_THE_WINDOW = 300 + 60


def _unauthenticated_attempts(body):
    now = int(time.time())
    good = receipt_signature(secret=SECRET, timestamp=now, body=body)
    return {
        "unsigned": {"signature": ""},
        "wrong secret": {"secret": OTHER_SECRET},
        "signature of another body": {"signature": receipt_signature_header(secret=SECRET, body=b"[]")},
        "stale timestamp": {"timestamp": now - OUTSIDE_THE_WINDOW},
        "future timestamp": {"timestamp": now + OUTSIDE_THE_WINDOW},
        "timestamp not matching the signature": {"signature": f"t={now - 1},v1={good}"},
        "no timestamp": {"signature": f"v1={good}"},
        "garbage header": {"signature": "Bearer abc"},
        "uppercase hex": {"signature": f"t={now},v1={good.upper()}"},
        "oversized header": {"signature": f"t={now},v1={good}," + "v1=00," * 300},
        "unknown provider": {"url": "/api/v1/receipts/email/acme-mail"},
        "provider of another channel": {"url": "/api/v1/receipts/email/sms-gateway"},
        "provider with a short secret": {"url": "/api/v1/receipts/email/short-secret", "secret": "too-short"},
    }


def test_every_unauthenticated_request_gets_the_same_401_and_changes_nothing(client, delivery):
    body = _body([_event("bounced")])
    before = _snapshot(delivery)
    answers = {}

    for name, options in _unauthenticated_attempts(body).items():
        response = _post(client, body, **options)
        answers[name] = (response.status_code, response.content)

    assert set(answers.values()) == {(401, answers["unsigned"][1])}, answers
    assert json.loads(answers["unsigned"][1]) == {
        "error": {"code": "unauthorized", "message": "a valid signature is required"}
    }
    assert _snapshot(delivery) == before


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "missing_signature"),
        ("t=abc,v1=00", "malformed_signature"),
        ("t=1700000000", "malformed_signature"),
        ("t=1700000000,v1=" + "0" * 64, "timestamp_outside_window"),
    ],
)
def test_the_log_names_why_a_request_was_refused_while_the_answer_does_not(header, reason):
    problem = receipts_api.receipt_signature_problem(
        header=header, secret=SECRET, body=b"[]", now=time.time(), tolerance=300
    )

    assert problem == reason


def test_a_wrong_signature_within_the_window_is_named_as_such():
    now = int(time.time())
    header = receipt_signature_header(secret=OTHER_SECRET, body=b"[]", timestamp=now)

    assert receipts_api.receipt_signature_problem(header=header, secret=SECRET, body=b"[]", now=now, tolerance=300) == (
        "wrong_signature"
    )
    assert receipts_api.receipt_signature_valid(
        header=receipt_signature_header(secret=SECRET, body=b"[]", timestamp=now),
        secret=SECRET,
        body=b"[]",
        now=now,
        tolerance=300,
    )


@pytest.mark.parametrize(
    ("offset", "problem"),
    [(-301, "timestamp_outside_window"), (-300, ""), (300, ""), (301, "timestamp_outside_window")],
)
def test_the_window_is_tolerance_seconds_either_side_of_the_clock(offset, problem):
    now = 1_800_000_000
    header = receipt_signature_header(secret=SECRET, body=b"[]", timestamp=now + offset)

    assert receipts_api.receipt_signature_problem(header=header, secret=SECRET, body=b"[]", now=now, tolerance=300) == (
        problem
    )


def test_a_request_replayed_after_the_window_is_refused(client, delivery):
    body = _body([_event()])
    captured = receipt_signature_header(secret=SECRET, body=body, timestamp=int(time.time()) - 600)

    response = _post(client, body, signature=captured)

    assert response.status_code == 401
    assert not DeliveryReceipt.objects.exists()


def test_repeated_failures_from_one_client_are_rate_limited(client, delivery, monkeypatch, clock):
    clock.advance_to_window_start(60)  # all attempts in one window
    monkeypatch.setattr(receipts_api, "AUTH_FAILURE_LIMIT", Limit(scope="receipt-auth-test", count=3, seconds=60))
    body = _body([_event()])

    statuses = [_post(client, body, secret=OTHER_SECRET).status_code for _ in range(4)]

    assert statuses == [401, 401, 401, 429]
    assert not DeliveryReceipt.objects.exists()


# --- refused: bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"[{", 400, "malformed_json", "body"),
        (b'[{"event_id": NaN}]', 400, "malformed_json", "body"),
        (b'{"event_id": "e-1"}', 422, "validation_error", "body"),
        (b"[]", 422, "validation_error", "body"),
        ("event without timestamp", 422, "validation_error", "[0].timestamp"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_problem(client, delivery, body, status, code, field):
    if body == "event without timestamp":  # built here, from the same event as the other tests
        event = _event()
        del event["timestamp"]
        body = _body([event])
    before = _snapshot(delivery)

    response = _post(client, body)

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert _snapshot(delivery) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event": "clicked"}, "[1].event"),
        ({"timestamp": "2026-11-29T08:00:00"}, "[1].timestamp"),  # no offset
        ({"timestamp": 1764378000}, "[1].timestamp"),  # epoch seconds: the offset is a guess
        ({"event_id": ""}, "[1].event_id"),
        ({"event_id": "has space"}, "[1].event_id"),
        ({"message_id": "x" * 129}, "[1].message_id"),
        ({"detail": "x" * 1001}, "[1].detail"),
        ({"event_id": 7}, "[1].event_id"),
    ],
)
def test_one_bad_event_refuses_the_whole_batch(client, delivery, change, field):
    body = _body([_event(event_id="ok-1"), {**_event(event_id="bad-2"), **change}])
    before = _snapshot(delivery)

    response = _post(client, body)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert _snapshot(delivery) == before


def test_more_events_than_the_cap_are_refused(client, delivery, settings):
    settings.CAKRA_RECEIPT_MAX_EVENTS = 3
    body = _body([_event(event_id=f"e-{n}") for n in range(4)])

    response = _post(client, body)

    assert response.status_code == 422
    assert "1 to 3 events" in response.json()["error"]["message"]
    assert not DeliveryReceipt.objects.exists()


def test_an_oversized_body_is_refused_before_it_is_read(client, delivery, settings):
    settings.CAKRA_RECEIPT_MAX_BYTES = 2048
    body = _body([_event(event_id=f"e-{n}") for n in range(30)])
    assert len(body) > 2048

    response = _post(client, body)
    unsigned = _post(client, body, signature="")

    assert response.status_code == unsigned.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not DeliveryReceipt.objects.exists()


def test_the_default_cap_takes_a_full_batch_of_a_thousand_events(settings):
    one = len(_body([_event(event_id="x" * 40, message_id="<" + "a" * 36 + "@korlantas.polri.go.id>")]))
    assert one * 1000 < settings.CAKRA_RECEIPT_MAX_BYTES
    assert settings.CAKRA_RECEIPT_MAX_EVENTS == 1000


def test_other_methods_answer_405_in_json(client, db):
    response = client.get(URL)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- logs and stored text carry no personal data ---------------------------------------------------------
def test_logs_and_stored_details_carry_no_address(client, delivery, caplog):
    address = ContactPoint.objects.get(pk=delivery.contact_point_id).value
    detail = f"550 5.1.1 <{address}>: Recipient address rejected"
    caplog.set_level(logging.DEBUG)

    _post(client, _body([_event("bounced", event_id="e-b", detail=detail)]))
    _post(client, _body([_event("delivered", event_id="e-u", message_id=f"<{address}>", detail=address)]))
    _post(client, _body([_event("bounced", event_id="e-x", detail=detail)]), secret=OTHER_SECRET)
    _post(client, b"[{" + address.encode())

    assert "e-b" in caplog.text  # ids are logged
    assert address not in caplog.text
    assert address.split("@")[0] not in caplog.text
    assert DeliveryReceipt.objects.get().detail == "550 5.1.1 <[address]>: Recipient address rejected"
    delivery.refresh_from_db()
    assert address not in delivery.last_error
    assert not AuditEvent.objects.filter(data__icontains=address.split("@")[0]).exists()


# --- OpenAPI ------------------------------------------------------------------------------------------------------
def test_the_webhook_is_documented_as_signed_with_its_errors(client, db):
    schema = client.get("/api/v1/openapi.json").json()

    post = schema["paths"][URL.replace("smtp-sink", "{provider}")]["post"]
    assert post["security"] == []
    assert {"200", "400", "401", "404", "413", "422", "429"} <= set(post["responses"])
    assert any(p["name"] == "X-Cakra-Signature" for p in post["parameters"])
    items = post["requestBody"]["content"]["application/json"]["schema"]["items"]
    assert set(items["required"]) == {"event_id", "message_id", "event", "timestamp"}


def test_timestamps_in_the_window_edge_are_accepted(client, delivery):
    body = _body([_event()])

    response = _post(client, body, timestamp=int(time.time()) - 290)

    assert response.status_code == 200
    assert DeliveryReceipt.objects.get().occurred_at <= timezone.now() + timedelta(seconds=1)
