"""Enumeration: a tester asks every object route about ids that exist but are
not the caller's, ids that exist nowhere, and malformed ids, and compares the
answers (status, headers and body). Any difference tells which ids exist.
Routes come from the URL resolver and the OpenAPI document."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import ApiKeyFactory
from tests.security.attack_world import (
    api_operations,
    api_url,
    backoffice_routes,
    english_client,
    portal_routes,
    region_objects,
    route_kwargs,
    route_url,
    sign_in,
    unknown_kwargs,
    visit,
)

# Headers that may legitimately differ between two answers (none of them depends on the id today).
VARYING_HEADERS: set[str] = set()


def _fingerprint(response) -> tuple[object, ...]:
    headers = sorted(
        (name.lower(), value) for name, value in response.headers.items() if name.lower() not in VARYING_HEADERS
    )
    return response.status_code, tuple(headers), response.content_bytes


@pytest.fixture
def own(region):
    return region_objects(region, plate_prefix="B", tag="ENU")


@pytest.fixture
def foreign(other_region):
    return region_objects(other_region, plate_prefix="D", tag="ENU")


def test_portal_routes_answer_alike_for_a_real_notice_and_no_notice(own):
    # No grant: a citizen who has not given the number and plate, probing ids.
    for route in [r for r in portal_routes() if r.kwargs]:
        real = visit(english_client(), "get", route_url(route, route_kwargs(route, own)))
        unknown = visit(english_client(), "get", route_url(route, unknown_kwargs(route)))
        assert _fingerprint(real) == _fingerprint(unknown), route
        assert real.status_code in {302, 404}, route


def test_back_office_routes_answer_alike_for_another_regions_unknown_and_malformed_ids(own, foreign):
    # The region's administrator passes every role check: each route reaches its lookup.
    officer = sign_in(english_client(), own.admin)
    malformed_numbers = ["12345", "0000000000000000", "abcdefghijklmnop", "1234 5678 9012 3456 7"]

    for route in [r for r in backoffice_routes() if r.kwargs]:
        for method in ("get", "post"):
            answers = [
                visit(officer, method, route_url(route, route_kwargs(route, foreign))),
                visit(officer, method, route_url(route, unknown_kwargs(route))),
            ]
            if route.kwargs == ("number",):
                answers += [visit(officer, method, route_url(route, {"number": n})) for n in malformed_numbers]
            assert len({_fingerprint(answer) for answer in answers}) == 1, (route, method)


def test_api_routes_answer_alike_for_another_regions_unknown_and_malformed_ids(own, foreign):
    _key, token = ApiKeyFactory.with_token(region=own.region)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    malformed = ["not-a-uuid", "12", "0" * 40, "1234567890123456"]

    for operation in [op for op in api_operations() if op.authenticated and op.parameters]:
        urls = [api_url(operation, foreign), api_url(operation, None)]
        urls += [operation.path.replace("{" + operation.parameters[0] + "}", value) for value in malformed]
        answers = {_fingerprint(visit(client, operation.method, url)) for url in urls}
        assert len(answers) == 1, operation


def test_an_anonymous_visitor_learns_nothing_from_back_office_ids(own, foreign):
    for route in [r for r in backoffice_routes() if r.kwargs]:
        mine = visit(english_client(), "get", route_url(route, route_kwargs(route, own)))
        unknown = visit(english_client(), "get", route_url(route, unknown_kwargs(route)))
        # The sign-in link names the page asked for; apart from it the answers are the same.
        assert (mine.status_code, mine.content_bytes) == (unknown.status_code, unknown.content_bytes), route
        assert mine.status_code in {302, 405}, route
