"""Officer account life: password change, deactivation, idle timeout,
absolute lifetime, re-authentication before sensitive actions."""

from __future__ import annotations

import io
import re
import time

import pytest
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client

from cakra.audit.models import AuditEvent
from cakra.backoffice.access import REAUTH_AT_KEY, SEEN_AT_KEY, SIGNED_IN_AT_KEY
from cakra.backoffice.models import Officer, OfficerTOTPDevice, SignInThrottle
from cakra.backoffice.services import officer_totp_device_create
from cakra.backoffice.throttle import sign_in_client_key
from cakra.security.models import Session
from cakra.security.sessions import SessionStore
from tests.backoffice.conftest import english_client, sign_in, totp_code
from tests.factories import OFFICER_PASSWORD, OfficerFactory

pytestmark = pytest.mark.django_db

QUEUE = "/backoffice/"
LOGIN = "/backoffice/login/"
PASSWORD = "/backoffice/account/password/"
REAUTH = "/backoffice/account/reauth/"
OFFICERS = "/backoffice/officers/"
NEW_PASSWORD = "a new and long passphrase 77"


@pytest.fixture(autouse=True)
def _no_otp_throttle_delay(settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def device_for(officer: Officer) -> OfficerTOTPDevice:
    existing = OfficerTOTPDevice.objects.filter(user=officer).first()
    return existing or officer_totp_device_create(officer=officer, name="test", confirmed=True)


def browser_of(officer: Officer) -> Client:
    return sign_in(english_client(), officer, device_for(officer))


def is_signed_in(client: Client) -> bool:
    response = client.get(QUEUE)
    if response.status_code == 200:
        return True
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)
    return False


def backdate(client: Client, key: str, seconds: float) -> None:
    """Move one of the session's clocks back, as if that much time had passed."""
    session = client.session
    session[key] = float(session[key]) - seconds
    session.save()


def audited(officer: Officer, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(object_id=str(officer.pk), action=action))


def sessions_of(officer: Officer) -> int:
    return Session.objects.filter(officer_id=officer.pk).count()


# --- Deactivation ------------------------------------------------------------------


def test_deactivation_on_the_command_line_refuses_every_live_session_at_once(officer):
    laptop, phone = browser_of(officer), browser_of(officer)
    assert is_signed_in(laptop)
    assert is_signed_in(phone)
    assert sessions_of(officer) == 2

    out = io.StringIO()
    call_command("officer", "deactivate", "--username", officer.username, stdout=out)
    assert "every session ended" in out.getvalue()

    assert not is_signed_in(laptop)
    assert not is_signed_in(phone)
    assert sessions_of(officer) == 0
    [event] = audited(officer, "officer.deactivated")
    assert event.data == {"changed": True, "sessions_ended": 2}
    # Nor can the officer sign in again.
    assert english_client().post(LOGIN, {"username": officer.username, "password": OFFICER_PASSWORD}).status_code == 200

    call_command("officer", "reactivate", "--username", officer.username, stdout=io.StringIO())
    assert audited(officer, "officer.reactivated")
    again = english_client().post(LOGIN, {"username": officer.username, "password": OFFICER_PASSWORD})
    assert again["Location"] == "/backoffice/login/otp/"


def test_an_administrator_deactivates_an_officer_of_the_region_after_a_fresh_code(officer):
    admin = OfficerFactory.create(region=officer.region, role=Officer.Role.ADMIN)
    admin_browser = browser_of(admin)
    officer_browser = browser_of(officer)
    deactivate = f"/backoffice/officers/{officer.pk}/deactivate/"

    # The code given at sign-in is older than the re-authentication window: refused, nothing done.
    backdate(admin_browser, REAUTH_AT_KEY, settings.CAKRA_OFFICER_REAUTH_SECONDS + 1)
    refused = admin_browser.post(deactivate, {"next": OFFICERS})
    assert refused.status_code == 302
    assert refused["Location"].startswith(REAUTH)
    officer.refresh_from_db()
    assert officer.is_active
    assert is_signed_in(officer_browser)
    assert not audited(officer, "officer.deactivated")

    # A wrong code does not re-authenticate.
    assert admin_browser.post(REAUTH, {"token": "000000", "next": OFFICERS}).status_code == 400
    assert admin_browser.post(deactivate, {"next": OFFICERS})["Location"].startswith(REAUTH)

    before = admin_browser.cookies[settings.SESSION_COOKIE_NAME].value
    confirmed = admin_browser.post(REAUTH, {"token": totp_code(device_for(admin)), "next": OFFICERS})
    assert confirmed["Location"] == OFFICERS
    assert admin_browser.cookies[settings.SESSION_COOKIE_NAME].value != before  # a privilege step: new key
    assert audited(admin, "officer.reauthenticated")
    assert admin_browser.get(OFFICERS).status_code == 200

    assert admin_browser.post(deactivate, {"next": OFFICERS})["Location"] == OFFICERS
    officer.refresh_from_db()
    assert not officer.is_active
    assert not is_signed_in(officer_browser)
    [event] = audited(officer, "officer.deactivated")
    assert event.actor_id == str(admin.pk)


def test_only_administrators_of_the_same_region_manage_officers(officer, other_region):
    validator_browser = browser_of(OfficerFactory.create(region=officer.region))
    assert validator_browser.get(OFFICERS).status_code == 403
    assert validator_browser.post(f"/backoffice/officers/{officer.pk}/deactivate/").status_code == 403

    elsewhere = browser_of(OfficerFactory.create(region=other_region, role=Officer.Role.ADMIN))
    other_region_officer = elsewhere.post(f"/backoffice/officers/{officer.pk}/deactivate/")
    unknown = elsewhere.post("/backoffice/officers/987654321/deactivate/")
    assert other_region_officer.status_code == unknown.status_code == 404
    assert other_region_officer.content == unknown.content
    officer.refresh_from_db()
    assert officer.is_active


def test_a_request_in_flight_cannot_bring_a_deactivated_session_back(officer):
    """A request that loaded the session before the deactivation and saves
    it afterwards (the idle clock writes on every request) must not recreate it."""
    browser = browser_of(officer)
    in_flight = SessionStore(browser.cookies[settings.SESSION_COOKIE_NAME].value)
    in_flight[SEEN_AT_KEY] = time.time()
    call_command("officer", "deactivate", "--username", officer.username, stdout=io.StringIO())
    with pytest.raises(UpdateError):
        in_flight.save()
    assert sessions_of(officer) == 0


# --- Password change ---------------------------------------------------------------


def change_password(client: Client, current: str, new: str, repeat: str | None = None):
    return client.post(
        PASSWORD,
        {"current_password": current, "new_password1": new, "new_password2": new if repeat is None else repeat},
    )


def test_a_password_change_ends_every_other_session_and_cycles_this_one(officer):
    this, other = browser_of(officer), browser_of(officer)
    before = this.cookies[settings.SESSION_COOKIE_NAME].value

    response = change_password(this, OFFICER_PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == QUEUE

    assert this.cookies[settings.SESSION_COOKIE_NAME].value != before
    assert is_signed_in(this)
    assert not is_signed_in(other)
    assert sessions_of(officer) == 1
    officer.refresh_from_db()
    assert officer.check_password(NEW_PASSWORD)
    [event] = audited(officer, "officer.password_changed")
    assert event.data == {"sessions_ended": 1}


def test_a_password_change_needs_the_current_password_and_a_valid_new_one(officer):
    this, other = browser_of(officer), browser_of(officer)
    wrong_current = change_password(this, "not the password at all", NEW_PASSWORD)
    too_short = change_password(this, OFFICER_PASSWORD, "short1")
    mismatch = change_password(this, OFFICER_PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x")
    assert wrong_current.status_code == too_short.status_code == mismatch.status_code == 400
    officer.refresh_from_db()
    assert officer.check_password(OFFICER_PASSWORD)
    assert is_signed_in(other)
    # A wrong current password counts as a failed sign-in from this address
    # (a stolen session cannot guess faster than the sign-in page allows).
    assert SignInThrottle.objects.get(officer=officer, client_key=sign_in_client_key("127.0.0.1")).attempts == 1
    assert not audited(officer, "officer.password_changed")


def test_the_password_page_loads_its_show_and_strength_script_from_our_own_origin_under_the_csp(officer):
    response = browser_of(officer).get(PASSWORD)

    assert response.status_code == 200
    page = response.content.decode()
    [tag] = re.findall(r"<script[^>]*>", page)  # the one script, and no inline code
    assert tag == '<script src="/static/backoffice/password-fields.js" defer>'
    assert finders.find("backoffice/password-fields.js") is not None
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    # The texts the script shows come from the page, translated; the rules are
    # on the page as text, so it works without the script.
    assert 'data-show-label="Show"' in page
    assert 'data-too-short="Too short: {count} of at least 12 characters."' in page
    assert 'data-min-length="12"' in page
    assert "Your password must contain at least 12 characters." in page
    assert 'aria-describedby="id_new_password1_helptext"' in page


def test_the_sign_in_page_offers_the_same_show_password_button():
    page = english_client().get(LOGIN).content.decode()

    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/backoffice/password-fields.js" defer>']
    assert 'data-password-form data-show-label="Show"' in page


def test_the_password_page_speaks_bahasa_indonesia_first(officer):
    client = sign_in(Client(HTTP_ACCEPT_LANGUAGE="id"), officer, device_for(officer))

    page = client.get(PASSWORD).content.decode()

    assert 'data-show-label="Tampilkan"' in page
    assert 'data-too-short="Terlalu pendek: {count} dari minimal 12 karakter."' in page


# --- Idle timeout and absolute lifetime ----------------------------------------------


def test_an_idle_session_is_refused_and_removed(officer):
    browser = browser_of(officer)
    backdate(browser, SEEN_AT_KEY, settings.CAKRA_OFFICER_IDLE_SECONDS - 30)
    assert is_signed_in(browser)  # within the idle limit; the request counts as activity
    backdate(browser, SEEN_AT_KEY, settings.CAKRA_OFFICER_IDLE_SECONDS + 1)
    assert not is_signed_in(browser)
    assert sessions_of(officer) == 0
    [event] = audited(officer, "officer.session_expired")
    assert event.data == {"reason": "idle"}


def test_a_session_ends_at_its_absolute_lifetime_however_active(officer):
    browser = browser_of(officer)
    backdate(browser, SIGNED_IN_AT_KEY, settings.CAKRA_OFFICER_SESSION_SECONDS + 1)
    assert not is_signed_in(browser)
    [event] = audited(officer, "officer.session_expired")
    assert event.data == {"reason": "absolute"}


def test_a_session_not_started_by_the_sign_in_is_refused(client, officer):
    """Password and device alone, without the sign-in's clocks: fail closed."""
    client.force_login(officer)
    session = client.session
    session["otp_device_id"] = device_for(officer).persistent_id
    session.save()
    assert not is_signed_in(client)
