"""Failed access-control decisions leave a trace (ASVS V7.2.2). A tester's
sweep (no key, a wrong key, a revoked key, a forged signature, another
region's ids, an auditor deciding, a validator on officer administration, a
half-signed-in session) must show up in the logs as ``access.denied`` events
naming the surface, the reason class and who asked (officer id or API key
prefix), and nothing else: no token, no plate, no owner data."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from cakra.api.models import ApiKey
from cakra.backoffice.models import Officer
from cakra.security.signing import receipt_signature_header
from tests.api.helpers import payload
from tests.factories import OFFICER_PASSWORD, ApiKeyFactory, OfficerFactory
from tests.security.attack_world import english_client, grant, region_objects, sign_in

EVENT = "access.denied"


@pytest.fixture
def own(region):
    return region_objects(region, plate_prefix="B", tag="OWN")


@pytest.fixture
def foreign(other_region):
    return region_objects(other_region, plate_prefix="D", tag="FOR")


@pytest.fixture
def denials(caplog):
    """The ``access.denied`` events logged so far, as their structured fields."""
    caplog.set_level(logging.INFO)

    def read() -> list[dict[str, Any]]:
        return [
            dict(record.msg)
            for record in caplog.records
            if isinstance(record.msg, dict) and record.msg.get("event") == EVENT
        ]

    return read


def _only(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(events) == 1, events
    return {key: value for key, value in events[0].items() if key not in {"level", "logger", "timestamp", "event"}}


def _api(token: str | None, path: str = "/api/v1/violations/00000000-0000-0000-0000-000000000000", **extra: Any) -> Any:
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": token} if token is not None else {}
    return Client().get(path, **headers, **extra)


# --- API keys -----------------------------------------------------------------------------


def _own_violation_id(region) -> str:
    """A violation of ``region``, received through the API."""
    _key, token = ApiKeyFactory.with_token(region=region)
    answer = Client().post(
        "/api/v1/violations",
        data=json.dumps(payload(capture_id="CAP-ACCESS-LOG")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 201, answer.content
    return str(answer.json()["id"])


@pytest.mark.django_db
def test_each_refused_api_key_is_logged_with_its_reason_class_and_never_the_token(region, denials, caplog):
    _key, token = ApiKeyFactory.with_token(region=region)
    prefix, secret = token.split("_")[1], token.split("_", 2)[2]
    revoked, revoked_token = ApiKeyFactory.with_token(region=region)
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    cases = [
        (None, "missing", None),
        ("Basic dXNlcjpwYXNz", "malformed", None),
        ("Bearer not-a-cakra-token", "malformed", None),
        (f"Bearer cakra_{prefix}_{'x' * 400}", "malformed", None),  # over the header cap: not even parsed
        (f"Bearer cakra_{prefix}_wrong-secret", "unknown_or_revoked", prefix),
        (f"Bearer cakra_{'0' * 12}_{secret}", "unknown_or_revoked", "0" * 12),
        (f"Bearer {revoked_token}", "unknown_or_revoked", revoked.prefix),
    ]
    for header, reason, logged_prefix in cases:
        caplog.clear()
        assert _api(header).status_code == 401
        expected = {"surface": "api", "reason": reason, "route": "api/v1/violations/<violation_id>", "method": "GET"}
        if logged_prefix:
            expected["api_key"] = logged_prefix
        assert _only(denials()) == expected, header
        assert secret not in caplog.text
        assert revoked_token.split("_", 2)[2] not in caplog.text
    # The control: the valid key is refused nothing, so nothing is logged as a refusal.
    caplog.clear()
    assert _api(f"Bearer {token}", f"/api/v1/violations/{_own_violation_id(region)}").status_code == 200
    assert denials() == []


@pytest.mark.django_db
def test_another_regions_objects_through_the_api_are_logged(own, foreign, denials, caplog):
    key, token = ApiKeyFactory.with_token(region=own.region)
    reads = [
        (f"/api/v1/violations/{foreign.waiting.id}", "violation", "api/v1/violations/<violation_id>"),
        (f"/api/v1/notices/{foreign.notice.number}", "notice", "api/v1/notices/<number>"),
    ]
    for path, object_type, route in reads:
        caplog.clear()
        assert _api(f"Bearer {token}", path).status_code == 404
        assert _only(denials()) == {
            "surface": "api",
            "reason": "not_found_in_region",
            "route": route,
            "method": "GET",
            "api_key": key.prefix,
            "object_type": object_type,
        }
        assert foreign.notice.number not in caplog.text
        assert foreign.vehicle.plate not in caplog.text


@pytest.mark.django_db
def test_a_forged_receipt_signature_is_logged(denials, caplog):
    body = json.dumps([{"event_id": "e", "message_id": "<m@x>", "event": "delivered", "timestamp": "x"}]).encode()
    forged = receipt_signature_header(secret="not-the-secret-" + "0" * 32, body=body, timestamp=int(time.time()))
    answer = Client().post(
        "/api/v1/receipts/email/smtp-sink",
        data=body,
        content_type="application/json",
        HTTP_X_CAKRA_SIGNATURE=forged,
    )
    assert answer.status_code == 401
    assert _only(denials()) == {
        "surface": "receipt_webhook",
        "reason": "wrong_signature",
        "route": "api/v1/receipts/email/<provider>",
        "method": "POST",
        "provider": "smtp-sink",
    }


# --- back office --------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_auditor_deciding_is_logged(own, denials):
    auditor = OfficerFactory.create(region=own.region, role=Officer.Role.AUDITOR)
    client = sign_in(english_client(), auditor)
    response = client.post(f"/backoffice/violations/{own.waiting.id}/validate/")
    assert response.status_code == 403
    event = _only(denials())
    assert event == {
        "surface": "backoffice",
        "reason": "not_a_decider",
        "route": event["route"],
        "method": "POST",
        "officer_id": auditor.pk,
    }
    assert event["route"].endswith("/validate/")


@pytest.mark.django_db
def test_a_non_administrator_on_officer_administration_is_logged(own, denials):
    client = sign_in(english_client(), own.validator)
    assert client.get("/backoffice/officers/").status_code == 403
    assert _only(denials()) == {
        "surface": "backoffice",
        "reason": "not_an_admin",
        "route": "backoffice/officers/",
        "method": "GET",
        "officer_id": own.validator.pk,
    }


@pytest.mark.django_db
def test_another_regions_objects_in_the_back_office_are_logged(own, foreign, denials, caplog):
    client = sign_in(english_client(), own.admin)
    reads = [
        (f"/backoffice/violations/{foreign.waiting.id}/", "violation", str(foreign.waiting.id)),
        (f"/backoffice/evidence/{foreign.waiting_evidence.id}/", "evidence", str(foreign.waiting_evidence.id)),
        (f"/backoffice/notices/{foreign.notice.number}/", "notice", None),
    ]
    for path, object_type, object_id in reads:
        caplog.clear()
        assert client.get(path).status_code == 404, path
        event = _only(denials())
        assert (event["surface"], event["reason"], event["officer_id"]) == (
            "backoffice",
            "not_found_in_region",
            own.admin.pk,
        )
        assert event["object_type"] == object_type
        assert event.get("object_id") == object_id
        assert foreign.notice.number not in caplog.text
        assert foreign.vehicle.plate not in caplog.text


@pytest.mark.django_db
def test_sessions_that_are_not_a_complete_sign_in_are_logged(own, denials, caplog):
    anonymous = english_client()
    assert anonymous.get("/backoffice/").status_code == 302
    assert _only(denials()) == {"surface": "backoffice", "reason": "anonymous", "route": "backoffice/", "method": "GET"}

    caplog.clear()
    halfway = english_client()
    answer = halfway.post("/backoffice/login/", {"username": own.validator.username, "password": OFFICER_PASSWORD})
    assert answer["Location"] == "/backoffice/login/otp/"
    caplog.clear()
    assert halfway.get("/backoffice/").status_code == 302
    assert _only(denials())["reason"] == "pending_sign_in"
    assert _only(denials())["officer_id"] == own.validator.pk
    assert OFFICER_PASSWORD not in caplog.text

    caplog.clear()
    deactivated = sign_in(english_client(), own.validator)
    Officer.objects.filter(pk=own.validator.pk).update(is_active=False)
    assert deactivated.get("/backoffice/").status_code == 302
    assert (_only(denials())["reason"], _only(denials())["officer_id"]) == ("account_unavailable", own.validator.pk)

    caplog.clear()
    no_second_factor = english_client()
    no_second_factor.force_login(OfficerFactory.create(region=own.region))
    assert no_second_factor.get("/backoffice/").status_code == 302
    assert _only(denials())["reason"] == "second_factor_missing"


# --- citizen portal -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_notice_without_a_live_grant_is_logged(own, foreign, denials, caplog):
    citizen = grant(english_client(), own.notice)
    assert citizen.get(f"/notice/{own.notice.id}/").status_code == 200  # the control
    assert denials() == []
    reads = [
        (f"/notice/{foreign.notice.id}/", "notice", foreign.notice.id),
        (f"/notice/{foreign.notice.id}/evidence/{foreign.notice_evidence.id}/", "evidence", foreign.notice_evidence.id),
    ]
    for path, object_type, object_id in reads:
        caplog.clear()
        assert citizen.get(path).status_code in {302, 404}, path
        event = _only(denials())
        assert (event["surface"], event["reason"], event["object_type"]) == ("portal", "no_live_grant", object_type)
        assert event["object_id"] == str(object_id)
        assert foreign.notice.number not in caplog.text
        assert foreign.vehicle.plate not in caplog.text
