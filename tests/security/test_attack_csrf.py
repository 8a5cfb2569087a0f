"""Cross-site request forgery: a page on another site makes the victim's
browser send a request with its cookies but without the form's token. Every
portal and back-office route refuses it, with the victim's session in place
(an officer signed in, a citizen holding a grant); the API takes no cookie at
all, so it needs no token."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from cakra.backoffice.models import Officer
from cakra.enforcement.models import Violation
from tests.factories import OFFICER_PASSWORD, ApiKeyFactory
from tests.security.attack_world import (
    api_operations,
    api_url,
    csrf_token,
    english_client,
    grant,
    portal_grants,
    region_objects,
    route_kwargs,
    route_url,
    sign_in,
    site_routes,
    state_of_every_decision,
)

UNSAFE_METHODS = ["post", "put", "patch", "delete"]


@pytest.fixture
def own(region):
    return region_objects(region, plate_prefix="B", tag="OWN")


def _victim(own) -> Client:
    """A browser with both kinds of session: an administrator's (whose
    requests may decide, manage officers and change a password) and a
    citizen's grant."""
    return grant(sign_in(english_client(enforce_csrf_checks=True), own.admin), own.notice)


def _is_csrf_refusal(response) -> bool:
    return response.status_code == 403 and "portal/csrf_failure.html" in [t.name for t in response.templates]


@pytest.mark.parametrize("method", UNSAFE_METHODS)
def test_every_route_refuses_a_forged_request_without_the_token(own, method):
    victim = _victim(own)
    before = state_of_every_decision()
    grants = portal_grants(victim)
    assert grants
    forged = {
        "reason": "Plat tidak terbaca",
        "language": "en",
        "next": "/",
        "number": own.notice.number,
        "current_password": OFFICER_PASSWORD,
        "new_password1": "a brand new passphrase 77",
        "new_password2": "a brand new passphrase 77",
    }

    for route in site_routes():
        url = route_url(route, route_kwargs(route, own))
        response = getattr(victim, method)(url, forged)
        assert _is_csrf_refusal(response), (route, method, response.status_code)

    assert state_of_every_decision() == before
    assert portal_grants(victim) == grants  # /selesai/ did not end the citizen's access
    assert victim.cookies.get(settings.LANGUAGE_COOKIE_NAME) is None  # the language switch did nothing


def test_a_token_from_another_session_is_refused(own):
    attacker = english_client(enforce_csrf_checks=True)
    attackers_token = csrf_token(attacker.get("/cek/"))
    victim = _victim(own)
    response = victim.post(
        f"/backoffice/violations/{own.waiting.id}/validate/", {"csrfmiddlewaretoken": attackers_token}
    )

    assert _is_csrf_refusal(response)
    assert Violation.objects.get(pk=own.waiting.pk).status == Violation.Status.RECEIVED


def test_the_same_request_with_the_pages_token_passes_the_check(own):
    # The control: the refusals above come from the missing token, not from the request itself.
    victim = _victim(own)
    token = csrf_token(victim.get(f"/backoffice/violations/{own.waiting.id}/"))

    response = victim.post(f"/backoffice/violations/{own.waiting.id}/validate/", {"csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert Violation.objects.get(pk=own.waiting.pk).status == Violation.Status.VALIDATED
    # Officer administration too: the same forged fields with the page's token do what they say.
    token = csrf_token(victim.get("/backoffice/officers/"))
    response = victim.post(
        f"/backoffice/officers/{own.validator.pk}/deactivate/", {"csrfmiddlewaretoken": token, "next": "/"}
    )
    assert response.status_code == 302
    assert not Officer.objects.get(pk=own.validator.pk).is_active


@pytest.mark.parametrize("operation", [op for op in api_operations() if op.authenticated], ids=str)
def test_the_api_needs_no_cookie_and_no_token(own, operation):
    _key, token = ApiKeyFactory.with_token(region=own.region)
    # A client that enforces CSRF and holds no cookie: a key alone is enough.
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {token}")

    response = client.generic(operation.method, api_url(operation, own), b"{}", content_type="application/json")

    assert response.status_code != 403
    assert response.status_code < 500
    assert not response.cookies  # the API never sets a session or CSRF cookie
