"""Open redirect, header injection and clickjacking. A phishing mail links to
the real sign-in or language switch with a ``next`` that leads off site (or
that smuggles a header through CR/LF); every such answer must stay on this
site with a clean Location header. Every answer forbids being framed."""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django_otp.oath import TOTP

from cakra.backoffice.models import Officer, OfficerTOTPDevice
from cakra.backoffice.services import officer_totp_device_create
from tests.factories import OFFICER_PASSWORD, ApiKeyFactory, OfficerFactory
from tests.security.attack_world import (
    api_operations,
    api_url,
    english_client,
    grant,
    region_objects,
    route_kwargs,
    route_url,
    sign_in,
    site_routes,
    visit,
)

HIDDEN_NEXT = re.compile(r'name="next" value="([^"]*)"|name="next" id="id_next"()')
OFF_SITE = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "https:evil.example",
    "https://evil.example/backoffice/",
    "http://testserver@evil.example/backoffice/",
    "https://evil.example%2F@testserver/backoffice/",
    "%2F%2Fevil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    " //evil.example",
    "\t//evil.example",
    "/\t/evil.example",
    "/backoffice/..//evil.example",
    "/backoffice/@evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/backoffice/\r\nSet-Cookie: pwned=1",
    "/backoffice/%0d%0aSet-Cookie:%20pwned=1",
    "/backoffice/\rLocation: https://evil.example",
    "/backoffice/\u202e/elpmaxe.live//",
]


def _on_site(location: str) -> bool:
    """Whether a browser following ``location`` stays on this site. Browsers
    drop leading blanks and read a backslash as a slash ("/\\host" is "//host")."""
    if any(char in location for char in "\r\n\t\x00"):
        return False
    parts = urlsplit(location.lstrip(" ").replace("\\", "/"))
    return parts.scheme in {"", "http"} and parts.netloc in {"", "testserver"} and not parts.path.startswith("//")


def _assert_stays_on_site(response, attempt: str) -> None:
    assert _on_site(response["Location"]), (attempt, response["Location"])
    assert "pwned" not in response.cookies, attempt
    assert not any(name.lower() == "pwned" for name in response.headers), attempt


def _totp_now(device: OfficerTOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    return f"{totp.token():06d}"


def _sign_in_with_next(region, next_url: str) -> tuple[Any, Any]:
    """The whole sign-in (password, then a fresh TOTP code) carrying ``next_url``
    from the link through the form; the answers of both steps."""
    officer = OfficerFactory.create(region=region, role=Officer.Role.VALIDATOR)
    device = officer_totp_device_create(officer=officer, name="phone", confirmed=True)
    client = english_client()
    client.get("/backoffice/login/", {"next": next_url})
    password_step = client.post(
        "/backoffice/login/", {"username": officer.username, "password": OFFICER_PASSWORD, "next": next_url}
    )
    return password_step, client.post("/backoffice/login/otp/", {"token": _totp_now(device)})


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_sign_in_with_an_off_site_next_stays_on_site(region, next_url):
    password_step, code_step = _sign_in_with_next(region, next_url)

    if password_step.status_code == 400:  # a value a form field cannot hold (NUL, CR in the middle) is refused
        return
    assert password_step.status_code == 302
    _assert_stays_on_site(password_step, next_url)
    assert code_step.status_code == 302, code_step.status_code
    _assert_stays_on_site(code_step, next_url)
    assert urlsplit(code_step["Location"]).path.startswith("/backoffice/")
    if not next_url.isprintable():
        # Refused, not merely encoded: the officer lands on the queue.
        assert code_step["Location"] == "/backoffice/"


def test_the_sign_in_link_carries_no_off_site_next_into_the_form():
    for next_url in OFF_SITE:
        page = visit(english_client(), "get", "/backoffice/login/", {"next": next_url}).content_bytes.decode()
        field = HIDDEN_NEXT.search(page)
        assert field is not None
        carried = html.unescape(field.group(1) or "")
        assert carried == "" or _on_site(carried), (next_url, carried)


def test_sign_in_still_returns_to_a_back_office_page(region):
    # The control: the same flow with a genuine back-office page returns there.
    _password_step, code_step = _sign_in_with_next(region, "/backoffice/?page=2")

    assert code_step["Location"] == "/backoffice/?page=2"


def _reauth_with_next(region, next_url: str) -> tuple[Any, Any]:
    """A signed-in administrator follows a link to the re-authentication page
    carrying ``next_url`` and gives a fresh code with it; the page and the answer."""
    officer = OfficerFactory.create(region=region, role=Officer.Role.ADMIN)
    client = sign_in(english_client(), officer)
    device = OfficerTOTPDevice.objects.get(user=officer)
    page = visit(client, "get", "/backoffice/account/reauth/", {"next": next_url})
    return page, client.post("/backoffice/account/reauth/", {"token": _totp_now(device), "next": next_url})


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_re_authentication_with_an_off_site_next_stays_on_site(region, next_url):
    page, code_step = _reauth_with_next(region, next_url)

    field = HIDDEN_NEXT.search(page.content_bytes.decode())
    assert field is not None
    carried = html.unescape(field.group(1) or "")
    assert carried == "" or _on_site(carried), carried
    assert code_step.status_code == 302, code_step.status_code
    _assert_stays_on_site(code_step, next_url)
    assert urlsplit(code_step["Location"]).path.startswith("/backoffice/")


def test_re_authentication_still_returns_to_a_back_office_page(region):
    # The control: the code was accepted and a genuine page is where it returns.
    _page, code_step = _reauth_with_next(region, "/backoffice/officers/")

    assert code_step["Location"] == "/backoffice/officers/"


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_language_switch_with_an_off_site_next_or_referer_stays_on_site(next_url):
    client = english_client()

    by_next = client.post("/i18n/setlang/", {"language": "en", "next": next_url})
    by_referer = client.post("/i18n/setlang/", {"language": "id"}, HTTP_REFERER=next_url)

    for response in (by_next, by_referer):
        assert response.status_code == 302
        _assert_stays_on_site(response, next_url)


def test_pages_cannot_be_framed(region):
    own = region_objects(region, plate_prefix="B", tag="FRM")
    # The administrator sees every back-office page, officer administration included.
    officer = sign_in(english_client(), own.admin)
    citizen = grant(english_client(), own.notice)
    _key, token = ApiKeyFactory.with_token(region=own.region)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    answers = []
    for route in site_routes():
        url = route_url(route, route_kwargs(route, own))
        answers += [
            (f"{who} {route}", visit(client, "get", url))
            for who, client in (("officer", officer), ("citizen", citizen), ("anonymous", english_client()))
        ]
    answers += [(str(op), api.generic(op.method, api_url(op, own))) for op in api_operations()]
    answers.append(("unknown path", visit(english_client(), "get", "/wp-admin/")))
    answers.append(("csrf failure", visit(english_client(enforce_csrf_checks=True), "post", "/cek/")))

    statuses = {response.status_code for _label, response in answers}
    assert {200, 302, 404, 403} <= statuses
    for label, response in answers:
        assert response["X-Frame-Options"] == "DENY", label
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"], label
