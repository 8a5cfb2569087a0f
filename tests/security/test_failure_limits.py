"""Failure limits behind the credential: others' failures from a shared
address (a NAT, a provider's shared egress) never lock out a valid API key or
a validly signed webhook. The credential is checked first; only a failure
counts and may be answered 429."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from django.utils import timezone

import cakra.api.receipts as receipts_api
from cakra.api.auth import AUTH_FAILURE_LIMIT
from cakra.security.signing import receipt_signature_header
from tests.api.helpers import get, payload, post

pytestmark = pytest.mark.django_db

SHARED_ADDRESS = "192.0.2.44"
WEBHOOK_URL = "/api/v1/receipts/email/provider-a"
SECRET = "provider-a-secret-that-is-long-enough-0123"
WRONG_SECRET = "a-forger-s-secret-that-is-long-enough-0123"


def test_a_valid_api_key_passes_when_others_filled_the_failure_limit(api_key, vehicle, clock):
    clock.advance_to_window_start(AUTH_FAILURE_LIMIT.seconds)  # all attempts in one window
    _, token = api_key
    client = Client(REMOTE_ADDR=SHARED_ADDRESS)
    statuses = [get(client, "cakra_wrong", "violations/x").status_code for _ in range(AUTH_FAILURE_LIMIT.count + 1)]
    assert statuses == [401] * AUTH_FAILURE_LIMIT.count + [429]

    # The camera system behind the same address still works, reads and writes.
    assert get(client, token, "violations/x").status_code == 404
    assert post(client, token, payload()).status_code == 201
    # And the forger is still refused.
    assert get(client, "cakra_wrong", "violations/x").status_code == 429


def _receipts(client, *, secret):
    body = json.dumps(
        [
            {
                "event_id": f"evt-{i}",
                "message_id": f"<unknown-{i}@example.org>",
                "event": "delivered",
                "timestamp": timezone.now().isoformat(),
                "detail": "",
            }
            for i in range(2)
        ]
    ).encode()
    signature = receipt_signature_header(secret=secret, body=body, timestamp=int(time.time()))
    return client.post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        headers={"X-Cakra-Signature": signature},
    )


def test_a_validly_signed_receipt_passes_when_others_filled_the_failure_limit(settings, clock):
    clock.advance_to_window_start(receipts_api.AUTH_FAILURE_LIMIT.seconds)  # all attempts in one window
    client = Client(REMOTE_ADDR=SHARED_ADDRESS)
    settings.CAKRA_RECEIPT_WEBHOOKS = {"provider-a": {"CHANNEL": "email", "PROVIDER": "smtp", "SECRET": SECRET}}
    limit = receipts_api.AUTH_FAILURE_LIMIT.count

    statuses = [_receipts(client, secret=WRONG_SECRET).status_code for _ in range(limit + 1)]
    assert statuses == [401] * limit + [429]

    accepted = _receipts(client, secret=SECRET)
    assert accepted.status_code == 200
    assert accepted.json()["unknown_reference"] == 2
    assert _receipts(client, secret=WRONG_SECRET).status_code == 429
