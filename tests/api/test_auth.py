"""API authentication: bearer keys only, one 401 for every failure, rate-limited failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from cakra.api.auth import AUTH_FAILURE_LIMIT
from cakra.api.models import ApiKey
from cakra.api.services import apikey_revoke
from tests.api.helpers import StoreSnapshot, assert_error, get, payload, post
from tests.factories import ApiKeyFactory


def _unauthorised(response):
    assert_error(response, 401, code="unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")
    return response.content


def test_missing_wrong_malformed_and_revoked_keys_get_the_same_401(client, api_key, vehicle):
    key, token = api_key
    prefix_of_real_key = "_".join(token.split("_", 2)[:2])
    revoked, revoked_token = ApiKeyFactory.with_token(region=key.region)
    apikey_revoke(prefix=revoked.prefix)
    store = StoreSnapshot()

    answers = {
        "missing": _unauthorised(client.post("/api/v1/violations", data="{}", content_type="application/json")),
        "basic": _unauthorised(
            client.post(
                "/api/v1/violations",
                data="{}",
                content_type="application/json",
                HTTP_AUTHORIZATION="Basic Zm9vOmJhcg==",
            )
        ),
        "empty bearer": _unauthorised(post(client, " ", payload())),
        "garbage": _unauthorised(post(client, "not-a-token", payload())),
        "wrong secret": _unauthorised(post(client, f"{prefix_of_real_key}_wrongsecret", payload())),
        "unknown prefix": _unauthorised(post(client, "cakra_000000000000_" + "a" * 43, payload())),
        "revoked": _unauthorised(post(client, revoked_token, payload())),
        "oversized header": _unauthorised(post(client, token + "x" * 500, payload())),
    }
    assert len(set(answers.values())) == 1
    store.assert_unchanged()


def test_status_views_need_a_key_too(client, api_key):
    _unauthorised(get(client, None, "violations/00000000-0000-0000-0000-000000000000"))
    _unauthorised(get(client, None, "notices/1234567890123456"))


def test_an_officer_session_cookie_does_not_authenticate_the_api(client, officer, api_key, vehicle):
    _, token = api_key
    violation_id = post(client, token, payload()).json()["id"]
    client.force_login(officer)

    response = client.get(f"/api/v1/violations/{violation_id}")

    _unauthorised(response)


def test_bearer_clients_need_no_csrf_token(api_key, vehicle):
    _, token = api_key
    strict = Client(enforce_csrf_checks=True)
    assert post(strict, token, payload()).status_code == 201


def test_repeated_failures_from_one_address_are_rate_limited(client, api_key, db, clock):
    clock.advance_to_window_start(AUTH_FAILURE_LIMIT.seconds)  # all attempts in one window
    _, token = api_key
    for _ in range(AUTH_FAILURE_LIMIT.count):
        assert post(client, "cakra_bad_key", payload()).status_code == 401

    limited = post(client, "cakra_bad_key", payload())
    assert_error(limited, 429, code="rate_limited")
    assert int(limited["Retry-After"]) > 0
    # Only failures are limited: a valid key from the same address is checked
    # first and goes through (keys are 256-bit, so this is no guessing oracle).
    assert post(client, token, payload()).status_code == 201
    # Another client address is not affected by the failures.
    assert post(client, "cakra_bad_key", payload(), REMOTE_ADDR="10.9.8.7").status_code == 401


def test_successful_requests_do_not_count_towards_the_limit(client, api_key, vehicle):
    _, token = api_key
    for position in range(AUTH_FAILURE_LIMIT.count + 5):
        assert get(client, token, f"violations/{position}").status_code == 404


def test_last_used_is_recorded_at_most_once_a_minute(client, api_key, db):
    key, token = api_key
    assert key.last_used_at is None
    get(client, token, "violations/x")
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None

    get(client, token, "violations/x")
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first

    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=two_minutes_ago)
    get(client, token, "violations/x")
    refreshed = ApiKey.objects.get(pk=key.pk).last_used_at
    assert refreshed is not None
    assert refreshed > two_minutes_ago


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive(client, api_key, db, scheme):
    _, token = api_key
    response = client.get("/api/v1/violations/x", HTTP_AUTHORIZATION=f"{scheme} {token}")
    assert response.status_code == 404
