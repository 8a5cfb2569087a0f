"""Receipt webhook forgery and replay beyond the basic signature checks of
tests/api/test_receipt_webhook.py: a signature made for one provider taken
to another's path, one provider reporting on another provider's messages, a
signed body re-serialised, an event id reused for a different event, and a
provider name spelled differently. Nothing may change in any of them. Two
sources sharing one secret (where a request replayed to the other's path
would verify) are refused at start-up by a system check."""

from __future__ import annotations

import json

import pytest
from django.core import checks
from django.test import override_settings
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.security.signing import receipt_signature_header
from tests.factories import make_notice

SECRET_A = "secret-of-provider-a-0123456789-abcdefghij"
SECRET_B = "secret-of-provider-b-0123456789-klmnopqrst"
REFERENCE = "<attack-webhook@korlantas.polri.go.id>"
URL_A = "/api/v1/receipts/email/mail-a"
URL_B = "/api/v1/receipts/email/mail-b"


@pytest.fixture(autouse=True)
def _two_providers(settings):
    settings.CAKRA_RECEIPT_WEBHOOKS = {
        "mail-a": {"CHANNEL": "email", "PROVIDER": "smtp", "SECRET": SECRET_A},
        "mail-b": {"CHANNEL": "email", "PROVIDER": "other-relay", "SECRET": SECRET_B},
    }


@pytest.fixture
def delivery(vehicle, pre_validated_key, region):
    """An email delivery sent through provider A (provider name "smtp")."""
    key, _token = pre_validated_key
    notice = make_notice(vehicle=vehicle, api_key=key, capture_id="CAP-HOOK")
    email = notice.deliveries.get(channel="email")
    Delivery.objects.filter(pk=email.pk).update(
        status=Delivery.Status.SENT, provider="smtp", provider_reference=REFERENCE, sent_at=timezone.now()
    )
    return email


def _events(event: str = "bounced", event_id: str = "evt-1") -> list[dict[str, str]]:
    return [
        {
            "event_id": event_id,
            "message_id": REFERENCE,
            "event": event,
            "timestamp": timezone.now().isoformat(),
            "detail": "550 mailbox unavailable",
        }
    ]


def _post(client, url: str, body: bytes, signature: str):
    return client.post(url, data=body, content_type="application/json", headers={"X-Cakra-Signature": signature})


def _state(delivery) -> tuple[object, ...]:
    row = Delivery.objects.values_list("status", "updated_at", "last_error").get(pk=delivery.pk)
    return row, DeliveryReceipt.objects.count(), AuditEvent.objects.count()


def test_two_sources_sharing_a_secret_are_a_system_check_error_that_never_shows_the_secret():
    shared = {
        "mail-a": {"CHANNEL": "email", "PROVIDER": "smtp", "SECRET": SECRET_A},
        "mail-b": {"CHANNEL": "email", "PROVIDER": "other-relay", "SECRET": SECRET_B},
        "mail-c": {"CHANNEL": "email", "PROVIDER": "third-relay", "SECRET": SECRET_A},
    }
    with override_settings(CAKRA_RECEIPT_WEBHOOKS=shared):
        errors = [message for message in checks.run_checks() if message.id == "cakra.E113"]

    [error] = errors
    assert error.is_serious()
    assert "'mail-a'" in error.msg
    assert "'mail-c'" in error.msg
    assert "mail-b" not in error.msg
    assert SECRET_A not in str(error)
    assert SECRET_A[:8] not in str(error)


def test_sources_with_secrets_of_their_own_pass_the_check():
    # The autouse fixture configured mail-a and mail-b with different secrets.
    assert "cakra.E113" not in {message.id for message in checks.run_checks()}


def test_a_signature_made_for_one_provider_is_refused_on_anothers_path(client, delivery):
    body = json.dumps(_events()).encode()
    before = _state(delivery)

    response = _post(client, URL_B, body, receipt_signature_header(secret=SECRET_A, body=body))

    assert response.status_code == 401
    assert _state(delivery) == before


def test_a_provider_cannot_report_on_another_providers_messages(client, delivery):
    # Provider B signs correctly with its own secret, naming a message provider A carried.
    body = json.dumps(_events()).encode()
    before = _state(delivery)

    response = _post(client, URL_B, body, receipt_signature_header(secret=SECRET_B, body=body))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_reference"
    assert _state(delivery) == before


def test_a_signed_body_reserialised_is_refused(client, delivery):
    events = _events()
    signed = json.dumps(events).encode()
    signature = receipt_signature_header(secret=SECRET_A, body=signed)
    before = _state(delivery)

    for altered in (
        json.dumps(events, indent=1).encode(),  # same JSON, other bytes
        signed + b" ",
        json.dumps([*events, {**events[0], "event_id": "evt-2"}]).encode(),  # an event smuggled in
        signed.replace(b"bounced", b"opened"),
    ):
        assert _post(client, URL_A, altered, signature).status_code == 401

    assert _state(delivery) == before


def test_an_event_id_reused_for_another_event_changes_nothing(client, delivery):
    first = json.dumps(_events("delivered", event_id="evt-7")).encode()
    assert _post(client, URL_A, first, receipt_signature_header(secret=SECRET_A, body=first)).status_code == 200
    after_first = _state(delivery)

    # Freshly signed (a provider resending, or anyone holding the secret), same id, other meaning.
    second = json.dumps(_events("bounced", event_id="evt-7")).encode()
    response = _post(client, URL_A, second, receipt_signature_header(secret=SECRET_A, body=second))

    assert response.status_code == 200
    assert response.json()["duplicate"] == 1
    assert _state(delivery) == after_first
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.DELIVERED


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/receipts/email/MAIL-A",
        "/api/v1/receipts/email/mail-a%00",
        "/api/v1/receipts/sms/mail-a",
        "/api/v1/receipts/email/mail-a/",
    ],
)
def test_a_provider_name_spelled_otherwise_is_no_provider(client, delivery, path):
    body = json.dumps(_events()).encode()
    before = _state(delivery)

    response = _post(client, path, body, receipt_signature_header(secret=SECRET_A, body=body))

    assert response.status_code in {401, 404}
    assert _state(delivery) == before


def test_a_captured_request_replayed_within_the_window_changes_nothing(client, delivery):
    body = json.dumps(_events("bounced", event_id="evt-9")).encode()
    signature = receipt_signature_header(secret=SECRET_A, body=body)
    assert _post(client, URL_A, body, signature).status_code == 200
    after_first = _state(delivery)

    replays = [_post(client, URL_A, body, signature) for _ in range(3)]

    assert [r.json()["duplicate"] for r in replays] == [1, 1, 1]
    assert _state(delivery) == after_first
