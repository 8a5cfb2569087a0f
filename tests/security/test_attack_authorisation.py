"""Authorisation sweep, the way a tester walks the site: every back-office
route without a session, with only the password step done, with a session
missing its second factor, and as an auditor (vertical); every object route
of the back office, the portal and the API with another region's (or another
citizen's) id (horizontal). Routes come from the URL resolver and the
OpenAPI document, so a new route is attacked without being listed here."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from django.test import Client

from cakra.backoffice.access import REAUTH_AT_KEY, SEEN_AT_KEY, SIGNED_IN_AT_KEY
from cakra.backoffice.models import Officer
from cakra.enforcement.models import Violation
from tests.factories import OFFICER_PASSWORD, ApiKeyFactory, OfficerFactory
from tests.security.attack_world import (
    BACKOFFICE_ADMIN,
    BACKOFFICE_PUBLIC,
    Route,
    api_operations,
    api_url,
    backoffice_routes,
    english_client,
    grant,
    portal_routes,
    region_objects,
    route_kwargs,
    route_url,
    sign_in,
    state_of_every_decision,
    unknown_kwargs,
    visit,
)

OFFICER_ONLY = [route for route in backoffice_routes() if route.name not in BACKOFFICE_PUBLIC]
OBJECT_ROUTES = [route for route in backoffice_routes() if route.kwargs]
PORTAL_OBJECT_ROUTES = [route for route in portal_routes() if route.kwargs]
API_AUTHENTICATED = [operation for operation in api_operations() if operation.authenticated]
API_OBJECT_READS = [operation for operation in API_AUTHENTICATED if operation.parameters]


@pytest.fixture
def own(region):
    return region_objects(region, plate_prefix="B", tag="OWN")


@pytest.fixture
def foreign(other_region):
    return region_objects(other_region, plate_prefix="D", tag="FOR")


def test_the_sweep_finds_the_routes_it_must_attack():
    # A resolver walk that silently found nothing would make every sweep pass.
    names = {route.name for route in OFFICER_ONLY}
    assert {"backoffice:queue", "backoffice:violation", "backoffice:validate", "backoffice:reject"} <= names
    assert names >= BACKOFFICE_ADMIN
    assert {"portal:notice", "portal:evidence"} <= {route.name for route in PORTAL_OBJECT_ROUTES}
    assert {"GET /api/v1/violations/{violation_id}", "GET /api/v1/notices/{number}"} <= set(map(str, API_OBJECT_READS))


def _assert_sent_to_sign_in(response, url: str) -> None:
    if response.status_code == 405:  # a method the route never takes: refused before anything is read
        assert response.content == b""
        return
    assert response.status_code == 302, (url, response.status_code)
    location = urlsplit(response["Location"])
    assert location.path == "/backoffice/login/"
    assert not location.netloc
    assert response.content == b""


def _password_only(officer: Officer) -> Client:
    """A browser that passed the password step and stopped before the code."""
    client = english_client()
    answer = client.post("/backoffice/login/", {"username": officer.username, "password": OFFICER_PASSWORD})
    assert answer["Location"] == "/backoffice/login/otp/"
    return client


def _without_second_factor(officer: Officer) -> Client:
    """A Django session for the officer with no verified OTP device, its
    clocks stamped as a sign-in would (so only the missing factor refuses it)."""
    client = english_client()
    client.force_login(officer)
    session = client.session
    now = time.time()
    for key in (SIGNED_IN_AT_KEY, SEEN_AT_KEY, REAUTH_AT_KEY):
        session[key] = now
    session.save()
    return client


@pytest.mark.parametrize("session", ["anonymous", "password_only", "no_second_factor", "deactivated"])
def test_officer_routes_without_a_complete_session_show_nothing_and_change_nothing(own, session):
    officer = own.validator
    if session == "anonymous":
        client = english_client()
    elif session == "password_only":
        client = _password_only(officer)
    elif session == "no_second_factor":
        client = _without_second_factor(officer)
    else:
        client = sign_in(english_client(), officer)
        Officer.objects.filter(pk=officer.pk).update(is_active=False)
    before = state_of_every_decision()

    for route in OFFICER_ONLY:
        url = route_url(route, route_kwargs(route, own))
        for method in ("get", "post"):
            _assert_sent_to_sign_in(visit(client, method, url, {"reason": "Plat tidak terbaca"}), f"{method} {url}")

    assert state_of_every_decision() == before


def _decision_routes(client: Client, own) -> list[Route]:
    """The officer routes that refuse GET: the state-changing ones."""
    return [
        route
        for route in OFFICER_ONLY
        if visit(client, "get", route_url(route, route_kwargs(route, own))).status_code == 405
    ]


def test_an_auditor_reads_every_page_but_every_state_changing_route_is_403(own):
    auditor = sign_in(english_client(), OfficerFactory.create(region=own.region, role=Officer.Role.AUDITOR))
    decisions = _decision_routes(auditor, own)
    assert {route.name for route in decisions} >= {"backoffice:validate", "backoffice:reject"}
    assert {"backoffice:officer_deactivate", "backoffice:officer_reactivate"} <= {route.name for route in decisions}
    before = state_of_every_decision()

    for route in decisions:
        response = auditor.post(route_url(route, route_kwargs(route, own)), {"reason": "Plat tidak terbaca"})
        assert response.status_code == 403, route
        assert b"Plat" not in response.content

    assert state_of_every_decision() == before
    readable = [route for route in OFFICER_ONLY if route not in decisions and route.name not in BACKOFFICE_ADMIN]
    for route in readable:
        assert visit(auditor, "get", route_url(route, route_kwargs(route, own))).status_code == 200, route
    # Officer administration is not reading: its pages are the administrators'.
    for route in [route for route in OFFICER_ONLY if route.name in BACKOFFICE_ADMIN and route not in decisions]:
        answer = visit(auditor, "get", route_url(route, route_kwargs(route, own)))
        assert answer.status_code == 403, route
        assert own.validator.username.encode() not in answer.content_bytes, route


@pytest.mark.parametrize("role", [Officer.Role.VALIDATOR, Officer.Role.SUPERVISOR, Officer.Role.AUDITOR])
def test_only_an_administrator_manages_officers(own, role):
    officer = sign_in(english_client(), OfficerFactory.create(region=own.region, role=role))
    admin = sign_in(english_client(), own.admin)
    before = state_of_every_decision()
    administration = [route for route in OFFICER_ONLY if route.name in BACKOFFICE_ADMIN]

    for route in administration:
        url = route_url(route, route_kwargs(route, own))
        for method in ("get", "post"):
            answer = visit(officer, method, url)
            assert answer.status_code in {403, 405}, (route, method, answer.status_code)
            assert own.validator.username.encode() not in answer.content_bytes, (route, method)

    assert state_of_every_decision() == before
    # The control: the region's administrator reaches the same pages.
    assert visit(admin, "get", "/backoffice/officers/").status_code == 200
    deactivate = route_url(_route("backoffice:officer_deactivate"), {"officer_id": own.validator.id})
    assert visit(admin, "post", deactivate)["Location"] == "/backoffice/officers/"
    assert not Officer.objects.get(pk=own.validator.pk).is_active


def _route(name: str) -> Route:
    return next(route for route in OFFICER_ONLY if route.name == name)


def test_another_regions_object_is_the_same_404_as_an_unknown_id(own, foreign):
    # The region's administrator: the one role that passes every role check,
    # so each route reaches its object lookup.
    officer = sign_in(english_client(), own.admin)
    before = state_of_every_decision()
    form = {"reason": "Plat tidak terbaca"}

    for route in OBJECT_ROUTES:
        for method in ("get", "post"):
            theirs = visit(officer, method, route_url(route, route_kwargs(route, foreign)), form)
            nothing = visit(officer, method, route_url(route, unknown_kwargs(route)), form)
            assert (theirs.status_code, theirs.content_bytes) == (nothing.status_code, nothing.content_bytes), route
            assert theirs.status_code in {404, 405}, (route, method)
        # The control: the officer's own object is served (or the route is POST-only).
        assert visit(officer, "get", route_url(route, route_kwargs(route, own))).status_code in {200, 405}, route

    assert state_of_every_decision() == before
    assert Violation.objects.get(pk=foreign.waiting.pk).status == Violation.Status.RECEIVED
    assert Officer.objects.get(pk=foreign.validator.pk).is_active


def test_a_citizen_granted_one_notice_gets_nothing_of_another(own, foreign):
    citizen = grant(english_client(), own.notice)

    for route in PORTAL_OBJECT_ROUTES:
        mine = visit(citizen, "get", route_url(route, route_kwargs(route, own)))
        theirs = visit(citizen, "get", route_url(route, route_kwargs(route, foreign)))
        nothing = visit(citizen, "get", route_url(route, unknown_kwargs(route)))
        assert mine.status_code == 200, route
        assert (theirs.status_code, theirs.content_bytes, theirs.get("Location")) == (
            nothing.status_code,
            nothing.content_bytes,
            nothing.get("Location"),
        ), route
        assert theirs.status_code in {302, 404}, route
        if "evidence_id" in route.kwargs:
            # The granted notice's id with another notice's photo opens nothing either.
            mixed = {**route_kwargs(route, own), "evidence_id": foreign.notice_evidence.id}
            assert visit(citizen, "get", route_url(route, mixed)).status_code == 404


def test_api_operations_refuse_a_signed_in_officers_cookie_without_a_key(own):
    officer = sign_in(Client(), own.validator)

    for operation in API_AUTHENTICATED:
        url = api_url(operation, own)
        with_cookie = officer.generic(operation.method, url, b"{}", content_type="application/json")
        anonymous = Client().generic(operation.method, url, b"{}", content_type="application/json")
        assert with_cookie.status_code == 401, operation
        assert with_cookie.content == anonymous.content, operation


def test_api_objects_of_another_region_are_the_same_404_as_unknown_ids(own, foreign):
    _key, token = ApiKeyFactory.with_token(region=own.region)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    for operation in API_OBJECT_READS:
        mine = client.generic(operation.method, api_url(operation, own))
        theirs = client.generic(operation.method, api_url(operation, foreign))
        nothing = client.generic(operation.method, api_url(operation, None))
        assert mine.status_code == 200, operation
        assert (theirs.status_code, theirs.content) == (nothing.status_code, nothing.content), operation
        assert theirs.status_code == 404, operation
