"""Cross-site request forgery: a page on another site makes the victim's
browser send a request with its cookies but without the form's token. Every
portal and back-office route refuses it, with the victim's session in place
(an officer signed in, a citizen holding a grant); the API takes no cookie at
all, so it needs no token."""

from __future__ import annotations

import pytest
from django.test import Client

from cakra.enforcement.models import Violation
from tests.factories import ApiKeyFactory
from tests.security.attack_world import (
    api_operations,
    api_url,
    csrf_token,
    english_client,
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
    """A browser with both kinds of session: an officer's and a citizen's grant."""
    client = sign_in(english_client(enforce_csrf_checks=True), own.validator)
    session = client.session
    session["portal_grants"] = {str(own.notice.id): 2**40}
    session.save()
    return client


def _is_csrf_refusal(response) -> bool:
    return response.status_code == 403 and "portal/csrf_failure.html" in [t.name for t in response.templates]


@pytest.mark.parametrize("method", UNSAFE_METHODS)
def test_every_route_refuses_a_forged_request_without_the_token(own, method):
    victim = _victim(own)
    before = state_of_every_decision()
    grants = victim.session["portal_grants"]
    forged = {"reason": "Plat tidak terbaca", "language": "en", "next": "/", "number": own.notice.number}

    for route in site_routes():
        url = route_url(route, route_kwargs(route, own))
        response = getattr(victim, method)(url, forged)
        assert _is_csrf_refusal(response), (route, method, response.status_code)

    assert state_of_every_decision() == before
    assert victim.session["portal_grants"] == grants  # /selesai/ did not end the citizen's access
    assert victim.cookies.get("django_language") is None  # the language switch did nothing


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


@pytest.mark.parametrize("operation", [op for op in api_operations() if op.authenticated], ids=str)
def test_the_api_needs_no_cookie_and_no_token(own, operation):
    _key, token = ApiKeyFactory.with_token(region=own.region)
    # A client that enforces CSRF and holds no cookie: a key alone is enough.
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {token}")

    response = client.generic(operation.method, api_url(operation, own), b"{}", content_type="application/json")

    assert response.status_code != 403
    assert response.status_code < 500
    assert not response.cookies  # the API never sets a session or CSRF cookie
