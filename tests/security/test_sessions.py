"""Sessions: fixation, separate realms for citizens and officers, cookie
attributes in production, and what a dump of the session table gives away."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from cakra.backoffice.services import officer_totp_device_create
from cakra.security.models import Session
from cakra.security.tasks import sessions_expired_purge_task
from tests.backoffice.conftest import english_client, sign_in, totp_code
from tests.factories import OFFICER_PASSWORD, OfficerFactory
from tests.security.production import production_environment

pytestmark = pytest.mark.django_db

LOOKUP = "/cek/"
QUEUE = "/backoffice/"


def lookup(client: Client, number: str, plate: str) -> int:
    return client.post(LOOKUP, {"number": number, "plate": plate}).status_code


def notice_opens(client: Client, notice_id: object) -> bool:
    """The notice page shows (without a grant it sends the browser back to the lookup form)."""
    return client.get(f"/notice/{notice_id}/").status_code == 200


def with_cookie(name: str, value: str) -> Client:
    browser = english_client()
    browser.cookies[name] = value
    return browser


# --- Fixation --------------------------------------------------------------------


def test_a_planted_session_does_not_receive_the_victims_grant(issued, other_issued):
    """The attacker opens their own notice, plants that session's id in the
    victim's browser, and waits for the victim to open theirs."""
    cookie = settings.CAKRA_PORTAL_SESSION_COOKIE_NAME
    attacker = Client()
    assert lookup(attacker, other_issued.notice.number, "B 9876 QRS") == 303
    planted = attacker.cookies[cookie].value

    victim = with_cookie(cookie, planted)
    assert lookup(victim, issued.notice.number, "B 1234 XYZ") == 303
    assert victim.cookies[cookie].value != planted
    assert notice_opens(victim, issued.notice.id)

    # The planted id holds nothing of the victim's.
    assert not notice_opens(attacker, issued.notice.id)


# --- Realms ----------------------------------------------------------------------


def test_a_portal_session_is_no_session_in_the_back_office(officer, issued):
    """An officer who also checks a notice in the same browser: the portal's
    cookie, wherever it leaks (a portal page, a proxy log), opens no back-office page."""
    device = officer_totp_device_create(officer=officer, name="test", confirmed=True)
    browser = sign_in(english_client(), officer, device)
    assert browser.get(QUEUE).status_code == 200
    assert lookup(browser, issued.notice.number, "B 1234 XYZ") == 303
    assert browser.get(QUEUE).status_code == 200  # the lookup did not touch the officer's session

    portal_value = browser.cookies[settings.CAKRA_PORTAL_SESSION_COOKIE_NAME].value
    assert portal_value != browser.cookies[settings.SESSION_COOKIE_NAME].value
    stolen = with_cookie(settings.SESSION_COOKIE_NAME, portal_value)
    assert stolen.get(QUEUE)["Location"].startswith("/backoffice/login/")


def test_an_officer_session_is_no_session_on_the_portal(officer, issued):
    device = officer_totp_device_create(officer=officer, name="test", confirmed=True)
    officer_browser = sign_in(english_client(), officer, device)
    assert lookup(officer_browser, issued.notice.number, "B 1234 XYZ") == 303
    # The officer's back-office cookie, sent as the portal's, carries neither the grant nor anything else.
    office_value = officer_browser.cookies[settings.SESSION_COOKIE_NAME].value
    other = with_cookie(settings.CAKRA_PORTAL_SESSION_COOKIE_NAME, office_value)
    assert not notice_opens(other, issued.notice.id)


# --- Cookie attributes in production ----------------------------------------------


def production_cookie_settings(tmp_path: Path) -> dict[str, object]:
    """The cookie settings as a production process computes them."""
    names = [
        "SESSION_COOKIE_NAME",
        "SESSION_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "SESSION_COOKIE_SAMESITE",
        "SESSION_COOKIE_DOMAIN",
        "SESSION_COOKIE_PATH",
        "SESSION_COOKIE_AGE",
        "CAKRA_PORTAL_SESSION_COOKIE_NAME",
        "CAKRA_PORTAL_SESSION_COOKIE_SAMESITE",
        "CAKRA_PORTAL_SESSION_COOKIE_AGE",
        "CSRF_COOKIE_NAME",
        "CSRF_COOKIE_SECURE",
        "CSRF_COOKIE_HTTPONLY",
        "CSRF_COOKIE_DOMAIN",
        "CSRF_COOKIE_PATH",
        "CSRF_COOKIE_SAMESITE",
    ]
    environment = production_environment(data_dir=tmp_path)
    program = (
        "import json, cakra.config.settings as s; "
        f"print(json.dumps({{name: getattr(s, name, None) for name in {names!r}}}))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", program], env=environment, capture_output=True, text=True, check=True, cwd=tmp_path
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_production_cookies_are_host_only_prefixed_and_apart_per_realm(tmp_path):
    production = production_cookie_settings(tmp_path)
    for name in ("SESSION_COOKIE_NAME", "CAKRA_PORTAL_SESSION_COOKIE_NAME", "CSRF_COOKIE_NAME"):
        assert str(production[name]).startswith("__Host-"), name
    assert production["SESSION_COOKIE_NAME"] != production["CAKRA_PORTAL_SESSION_COOKIE_NAME"]
    assert production["SESSION_COOKIE_SECURE"] is True
    assert production["CSRF_COOKIE_SECURE"] is True
    assert production["SESSION_COOKIE_HTTPONLY"] is True
    assert production["CSRF_COOKIE_HTTPONLY"] is True
    assert production["SESSION_COOKIE_DOMAIN"] is None
    assert production["CSRF_COOKIE_DOMAIN"] is None
    assert production["SESSION_COOKIE_PATH"] == production["CSRF_COOKIE_PATH"] == "/"
    assert production["SESSION_COOKIE_SAMESITE"] == "Strict"
    assert production["CAKRA_PORTAL_SESSION_COOKIE_SAMESITE"] == "Lax"
    # The portal's session lives as long as a notice grant, far shorter than an officer's.
    assert production["CAKRA_PORTAL_SESSION_COOKIE_AGE"] == 30 * 60
    assert production["SESSION_COOKIE_AGE"] == 8 * 60 * 60


def test_cookies_sent_carry_the_production_attributes(tmp_path, settings, officer, issued):
    production = production_cookie_settings(tmp_path)
    for name, value in production.items():
        setattr(settings, name, value)
    device = officer_totp_device_create(officer=officer, name="test", confirmed=True)

    portal = Client()
    form = portal.get(LOOKUP)
    looked_up = portal.post(LOOKUP, {"number": issued.notice.number, "plate": "B 1234 XYZ"})
    office = english_client()
    office.post("/backoffice/login/", {"username": officer.username, "password": OFFICER_PASSWORD})
    signed_in = office.post("/backoffice/login/otp/", {"token": totp_code(device)})
    assert signed_in.status_code == 302
    assert office.get(QUEUE).status_code == 200

    sent = [
        (str(production["CSRF_COOKIE_NAME"]), form, "Lax"),
        (str(production["CAKRA_PORTAL_SESSION_COOKIE_NAME"]), looked_up, "Lax"),
        (str(production["SESSION_COOKIE_NAME"]), signed_in, "Strict"),
    ]
    for name, response, samesite in sent:
        morsel = response.cookies[name]
        assert morsel["secure"] is True, name
        assert morsel["httponly"] is True, name
        assert morsel["samesite"] == samesite, name
        assert morsel["path"] == "/", name
        assert morsel["domain"] == "", name
    # No session cookie of one realm is set by the other's pages.
    assert production["SESSION_COOKIE_NAME"] not in looked_up.cookies
    assert production["CAKRA_PORTAL_SESSION_COOKIE_NAME"] not in signed_in.cookies


# --- What a dump gives away --------------------------------------------------------


def session_table_dump() -> list[str]:
    """Every value of every row of every session table, as a thief with a backup has them."""
    values: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if "session" not in table:
                continue
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - table names from the schema
            values.extend(str(value) for row in cursor.fetchall() for value in row if value is not None)
    return values


def test_no_value_in_a_session_table_dump_opens_the_back_office(officer, issued):
    device = officer_totp_device_create(officer=officer, name="test", confirmed=True)
    browser = sign_in(english_client(), officer, device)
    assert lookup(browser, issued.notice.number, "B 1234 XYZ") == 303
    second = OfficerFactory.create(region=officer.region)
    sign_in(english_client(), second, officer_totp_device_create(officer=second, name="test", confirmed=True))

    dump = session_table_dump()
    assert dump  # the rows are there
    live = browser.cookies[settings.SESSION_COOKIE_NAME].value
    assert live not in dump
    for value in dump:
        thief = with_cookie(settings.SESSION_COOKIE_NAME, value)
        assert thief.get(QUEUE).status_code == 302, "a dumped value opened the back office"
        portal_thief = with_cookie(settings.CAKRA_PORTAL_SESSION_COOKIE_NAME, value)
        assert not notice_opens(portal_thief, issued.notice.id)
    # The live cookie does open it: the refusals above are not a broken back office.
    assert with_cookie(settings.SESSION_COOKIE_NAME, live).get(QUEUE).status_code == 200


def test_expired_sessions_of_both_realms_are_purged_on_schedule():
    now = timezone.now()
    Session.objects.create(
        session_key="a" * 64, realm="portal", session_data="", expire_date=now - timedelta(seconds=1)
    )
    Session.objects.create(
        session_key="b" * 64, realm="backoffice", session_data="", expire_date=now - timedelta(hours=1)
    )
    Session.objects.create(
        session_key="c" * 64, realm="portal", session_data="", expire_date=now + timedelta(minutes=5)
    )
    sessions_expired_purge_task()
    assert list(Session.objects.values_list("session_key", flat=True)) == ["c" * 64]
    assert "sessions-expired-purge" in settings.CELERY_BEAT_SCHEDULE
