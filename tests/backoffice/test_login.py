"""Officer sign-in: password, then mandatory TOTP (enrolment or verification),
throttling per address, rate limit, no username enumeration, no
half-signed-in access. Attacks on the throttle itself (parallel guesses,
keeping an officer out, the per-account alert) are in
tests/security/test_sign_in_throttle.py."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password as real_make_password
from django.contrib.staticfiles import finders
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.backoffice import services
from cakra.backoffice.access import PENDING_LOGIN_KEY, PENDING_LOGIN_SECONDS
from cakra.backoffice.models import Officer, OfficerTOTPDevice, SignInThrottle
from cakra.backoffice.services import officer_otp_reset
from cakra.backoffice.throttle import sign_in_client_key
from cakra.backoffice.views.login import LOGIN_RATE_LIMIT
from cakra.security.ratelimit import hit
from tests.backoffice.conftest import english_client, sign_in, totp_code
from tests.factories import OFFICER_PASSWORD

LOGIN = reverse("backoffice:login")
OTP = reverse("backoffice:otp")
QUEUE = reverse("backoffice:queue")
LOGIN_FAILED = "Sign-in failed: the username or password is wrong, or sign-in from this device is paused for a while."
BAD_CODE = "That code is not valid."
CLIENT_FAILURES = 5  # the default per (officer, client address) and window
TEST_CLIENT_ADDRESS = "127.0.0.1"  # Django's test client


@pytest.fixture(autouse=True)
def _no_otp_throttle_delay(settings):
    # django-otp adds an exponential delay after a wrong code (1 s, 2 s, ...).
    # It stays on in production; here it would make "wrong code, then right
    # code" depend on the wall clock. The throttle is tested on our own counter (`SignInThrottle`).
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def password_step(client, username, password=OFFICER_PASSWORD, **extra):
    return client.post(LOGIN, {"username": username, "password": password, **extra})


def client_attempts(officer, address=TEST_CLIENT_ADDRESS):
    """Failed checks counted for ``officer`` from ``address`` in the current window."""
    row = SignInThrottle.objects.filter(officer=officer, client_key=sign_in_client_key(address)).first()
    return row.attempts if row is not None else 0


def client_throttled(officer, address=TEST_CLIENT_ADDRESS):
    return client_attempts(officer, address) >= CLIENT_FAILURES


def actions(officer=None):
    events = AuditEvent.objects.all()
    if officer is not None:
        events = events.filter(actor_id=str(officer.pk))
    return list(events.values_list("action", flat=True))


def _enrolment_code(officer):
    with transaction.atomic():
        return services.officer_enrolment_code_issue(officer=officer)


def test_first_sign_in_asks_the_enrolment_code_then_enrols_an_authenticator(client, officer):
    code = _enrolment_code(officer)
    client.get(LOGIN)
    cookie = settings.SESSION_COOKIE_NAME
    before = client.cookies[cookie].value if cookie in client.cookies else ""

    response = password_step(client, officer.username)
    assert response.status_code == 302
    assert response["Location"] == OTP

    # The password alone shows no secret and creates no device: the enrolment code first.
    page = client.get(OTP)
    assert page.status_code == 200
    assert "data:image/svg+xml" not in page.content.decode()
    assert 'name="code"' in page.content.decode()
    assert not OfficerTOTPDevice.objects.filter(user=officer).exists()

    response = client.post(OTP, {"code": code.lower().replace("-", " ")})  # as typed from paper
    assert response["Location"] == OTP

    # The enrolment page shows the QR code as a data: image and the key for typing.
    page = client.get(OTP)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'src="data:image/svg+xml' in html
    device = OfficerTOTPDevice.objects.get(user=officer)
    assert device.confirmed is False
    assert page.context["secret_grouped"].replace(" ", "") in html.replace(" ", "")

    # Password and enrolment code open nothing but this step.
    assert client.get(QUEUE)["Location"].startswith(LOGIN)

    response = client.post(OTP, {"token": totp_code(device)})
    assert response.status_code == 302
    assert response["Location"] == QUEUE
    device.refresh_from_db()
    assert device.confirmed is True
    assert client.get(QUEUE).status_code == 200
    # Each privilege step got a new session key (no fixation).
    assert client.cookies[cookie].value != before
    assert PENDING_LOGIN_KEY not in client.session
    assert actions(officer) == [
        "officer.otp_enrolment_started",
        "officer.otp_enrolled",
        "officer.login_succeeded",
    ]
    officer.refresh_from_db()
    assert officer.enrolment_code_hash == ""  # single use


def test_the_password_alone_cannot_set_up_an_authenticator(client, officer):
    # The attack this step exists for: someone who learned the initial password.
    _enrolment_code(officer)
    password_step(client, officer.username)

    for guess in ("ABCD-EFGH-JKMN", "2345-6789-ABCD"):
        response = client.post(OTP, {"code": guess})
        assert response.status_code == 400
        assert "not valid or has expired" in response.content.decode()
    assert client.post(OTP, {"code": "short"}).status_code == 400

    assert not OfficerTOTPDevice.objects.filter(user=officer).exists()
    assert client_attempts(officer) == 2  # wrong codes count toward the throttle
    assert actions(officer).count("officer.login_failed") == 2


def test_wrong_enrolment_codes_throttle_the_address(client, officer):
    code = _enrolment_code(officer)
    password_step(client, officer.username)
    for _ in range(CLIENT_FAILURES - 1):
        client.post(OTP, {"code": "ABCD-EFGH-JKMN"})

    response = client.post(OTP, {"code": "ABCD-EFGH-JKMN"})

    assert response["Location"] == LOGIN
    assert client_throttled(officer)
    password_step(client, officer.username)  # throttled: even the right code is no use from here now
    assert client.get(OTP)["Location"] == LOGIN
    assert not OfficerTOTPDevice.objects.filter(user=officer).exists()
    assert code  # issued, never accepted


def test_an_expired_or_replaced_enrolment_code_is_refused(client, officer):
    old = _enrolment_code(officer)
    new = _enrolment_code(officer)  # a reissue replaces the first one
    password_step(client, officer.username)
    assert client.post(OTP, {"code": old}).status_code == 400

    Officer.objects.filter(pk=officer.pk).update(enrolment_code_expires_at=timezone.now() - timedelta(seconds=1))
    assert client.post(OTP, {"code": new}).status_code == 400
    assert not OfficerTOTPDevice.objects.filter(user=officer).exists()


def test_sign_in_with_an_existing_device_asks_for_a_code_and_no_enrolment(client, officer, otp_device):
    response = password_step(client, officer.username)
    assert response["Location"] == OTP
    page = client.get(OTP)
    assert "data:image/svg+xml" not in page.content.decode()
    assert OfficerTOTPDevice.objects.filter(user=officer).count() == 1

    response = client.post(OTP, {"token": totp_code(otp_device)})
    assert response["Location"] == QUEUE
    assert client.get(QUEUE).status_code == 200


def test_a_code_typed_with_a_space_is_accepted(client, officer, otp_device):
    password_step(client, officer.username)
    code = totp_code(otp_device)
    response = client.post(OTP, {"token": f"{code[:3]} {code[3:]}"})
    assert response["Location"] == QUEUE


def test_wrong_password_and_unknown_user_get_the_same_answer(client, officer, monkeypatch):
    hashed = []

    def counting_make_password(password, *args, **kwargs):
        hashed.append(True)
        return real_make_password(password, *args, **kwargs)

    monkeypatch.setattr(services, "make_password", counting_make_password)

    wrong = password_step(client, officer.username, "not the password at all")
    unknown = password_step(client, "no-such-officer", "not the password at all")

    for response in (wrong, unknown):
        assert response.status_code == 200
        assert LOGIN_FAILED in response.content.decode()
        assert PENDING_LOGIN_KEY not in client.session
    # The unknown username still paid for a password hash (no timing oracle).
    assert hashed == [True]
    assert client_attempts(officer) == 1
    failures = AuditEvent.objects.filter(action="officer.login_failed").order_by("seq")
    assert [e.actor_id for e in failures] == [str(officer.pk), ""]
    # Nothing typed is kept: not the unknown username, not the password.
    for event in failures:
        assert "no-such-officer" not in str(event.data)
        assert "not the password" not in str(event.data)


def test_inactive_or_regionless_officers_get_the_same_answer(client, officer, region):
    Officer.objects.filter(pk=officer.pk).update(is_active=False)
    assert LOGIN_FAILED in password_step(client, officer.username).content.decode()
    Officer.objects.filter(pk=officer.pk).update(is_active=True, region=None)
    assert LOGIN_FAILED in password_step(client, officer.username).content.decode()
    assert PENDING_LOGIN_KEY not in client.session


def test_wrong_code_is_refused_and_counted(client, officer, otp_device):
    password_step(client, officer.username)
    good = totp_code(otp_device)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    response = client.post(OTP, {"token": wrong})
    assert response.status_code == 400
    assert BAD_CODE in response.content.decode()
    assert client_attempts(officer) == 1
    assert client.get(QUEUE)["Location"].startswith(LOGIN)
    # Garbage is a form error, not a verification attempt.
    assert client.post(OTP, {"token": "12ab56"}).status_code == 400
    assert client_attempts(officer) == 1
    # The right code still works, and success clears the counter.
    assert client.post(OTP, {"token": good})["Location"] == QUEUE
    assert client_attempts(officer) == 0


def test_a_code_cannot_be_replayed(client, officer, otp_device):
    password_step(client, officer.username)
    code = totp_code(otp_device)
    assert client.post(OTP, {"token": code})["Location"] == QUEUE
    client.post(reverse("backoffice:logout"))

    password_step(client, officer.username)
    response = client.post(OTP, {"token": code})
    assert response.status_code == 400
    assert BAD_CODE in response.content.decode()
    assert client.get(QUEUE)["Location"].startswith(LOGIN)
    # The next time step's code is fine.
    assert client.post(OTP, {"token": totp_code(otp_device, steps_ahead=1)})["Location"] == QUEUE


def test_five_wrong_passwords_throttle_the_address_for_fifteen_minutes(client, officer, otp_device):
    for _ in range(CLIENT_FAILURES):
        password_step(client, officer.username, "wrong password, again")
    assert client_throttled(officer)
    row = SignInThrottle.objects.get(officer=officer, client_key=sign_in_client_key(TEST_CLIENT_ADDRESS))
    assert timedelta(0) <= timezone.now() - row.window_started_at < timedelta(minutes=1)

    # Throttled: even the right password gets the same answer as a wrong one.
    response = password_step(client, officer.username)
    assert LOGIN_FAILED in response.content.decode()
    assert PENDING_LOGIN_KEY not in client.session
    # Refused attempts are not counted: they do not extend the window.
    assert client_attempts(officer) == CLIENT_FAILURES
    assert actions(officer).count("officer.login_failed") == CLIENT_FAILURES + 1

    # Once the window has passed (time moved by editing the row), sign-in works.
    SignInThrottle.objects.filter(pk=row.pk).update(window_started_at=row.window_started_at - timedelta(minutes=15))
    assert password_step(client, officer.username)["Location"] == OTP
    assert client.post(OTP, {"token": totp_code(otp_device)})["Location"] == QUEUE
    assert client_attempts(officer) == 0


def test_password_and_code_failures_count_together_towards_the_throttle(client, officer, otp_device):
    password_step(client, officer.username, "wrong password one")
    password_step(client, officer.username, "wrong password two")
    password_step(client, officer.username)
    good = totp_code(otp_device)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    assert client.post(OTP, {"token": wrong}).status_code == 400
    assert client.post(OTP, {"token": wrong}).status_code == 400
    response = client.post(OTP, {"token": wrong})  # the fifth failure
    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert client_throttled(officer)
    assert PENDING_LOGIN_KEY not in client.session
    # A good password now gets the same refusal; the good code is never asked for.
    assert LOGIN_FAILED in password_step(client, officer.username).content.decode()


def test_the_code_step_refuses_a_throttled_address(client, officer, otp_device):
    password_step(client, officer.username)
    SignInThrottle.objects.filter(officer=officer, client_key=sign_in_client_key(TEST_CLIENT_ADDRESS)).update(
        attempts=CLIENT_FAILURES
    )
    response = client.post(OTP, {"token": totp_code(otp_device)})
    assert response["Location"] == LOGIN
    assert client.get(QUEUE)["Location"].startswith(LOGIN)
    otp_device.refresh_from_db()
    assert otp_device.last_t == -1  # the code was not even checked (nor used up)


def test_the_half_signed_in_state_expires(client, officer, otp_device):
    password_step(client, officer.username)
    session = client.session
    session[PENDING_LOGIN_KEY] = {**session[PENDING_LOGIN_KEY], "started": time.time() - PENDING_LOGIN_SECONDS - 1}
    session.save()
    response = client.post(OTP, {"token": totp_code(otp_device)})
    assert response["Location"] == LOGIN
    assert client.get(QUEUE)["Location"].startswith(LOGIN)
    otp_device.refresh_from_db()
    assert otp_device.last_t == -1


def test_the_code_step_without_a_password_step_sends_back_to_sign_in(client, officer, otp_device):
    assert client.get(OTP)["Location"] == LOGIN
    assert client.post(OTP, {"token": totp_code(otp_device)})["Location"] == LOGIN


@pytest.mark.parametrize(
    "path",
    [
        "backoffice:queue",
        ("backoffice:violation", "6d3b0a9e-3b1f-4e0c-9d55-3a1e8f0c2b11"),
        ("backoffice:evidence", "6d3b0a9e-3b1f-4e0c-9d55-3a1e8f0c2b11"),
        ("backoffice:notice", "1234567890123456"),
    ],
)
def test_pages_refuse_a_password_only_session(client, officer, otp_device, path):
    url = reverse(path) if isinstance(path, str) else reverse(path[0], args=[path[1]])
    password_step(client, officer.username)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)


def test_pages_refuse_an_authenticated_session_without_otp(client, officer, otp_device, make_violation):
    violation = make_violation()
    client.force_login(officer)  # a Django session with no verified device
    assert client.get(QUEUE)["Location"].startswith(LOGIN)
    response = client.post(reverse("backoffice:validate", args=[violation.id]))
    assert response["Location"].startswith(LOGIN)
    violation.refresh_from_db()
    assert violation.status == "received"


def test_resetting_the_authenticator_ends_verified_sessions(officer_client, officer):
    assert officer_client.get(QUEUE).status_code == 200
    officer_otp_reset(username=officer.username)
    assert officer_client.get(QUEUE)["Location"].startswith(LOGIN)


def test_sign_in_returns_to_the_requested_back_office_page_only(client, officer, otp_device, make_violation):
    violation = make_violation()
    target = reverse("backoffice:violation", args=[violation.id])
    assert client.get(target)["Location"] == f"{LOGIN}?next={target}"
    password_step(client, officer.username, next=target)
    assert client.post(OTP, {"token": totp_code(otp_device)})["Location"] == target

    client.post(reverse("backoffice:logout"))
    password_step(client, officer.username, next="https://evil.example/phish")
    assert client.post(OTP, {"token": totp_code(otp_device, steps_ahead=1)})["Location"] == QUEUE


def test_sign_in_is_rate_limited_per_client_address(client, officer, clock):
    clock.advance_to_window_start(LOGIN_RATE_LIMIT.seconds)  # all attempts in one window
    for _ in range(LOGIN_RATE_LIMIT.count):
        hit(LOGIN_RATE_LIMIT, "127.0.0.1")
    response = password_step(client, officer.username)
    assert response.status_code == 429
    assert PENDING_LOGIN_KEY not in client.session
    # Refused before the password was even checked: nothing counted or audited.
    assert not SignInThrottle.objects.exists()
    assert actions(officer) == []


def test_logout_is_post_only_and_ends_the_session(officer_client, officer):
    assert officer_client.get(reverse("backoffice:logout")).status_code == 405
    assert officer_client.get(QUEUE).status_code == 200
    response = officer_client.post(reverse("backoffice:logout"))
    assert response["Location"] == LOGIN
    assert officer_client.get(QUEUE)["Location"].startswith(LOGIN)
    assert actions(officer) == ["officer.logged_out"]


def test_logout_requires_csrf(csrf_client, officer, otp_device):

    sign_in(csrf_client, officer, otp_device)
    assert csrf_client.post(reverse("backoffice:logout")).status_code == 403
    assert csrf_client.get(QUEUE).status_code == 200


def test_login_pages_follow_the_content_security_policy(client, officer):
    code = _enrolment_code(officer)
    page = client.get(LOGIN)
    assert "default-src 'none'" in page["Content-Security-Policy"]
    password_step(client, officer.username)
    enrolment_code = client.get(OTP)
    client.post(OTP, {"code": code})
    enrol = client.get(OTP)
    assert "data:image/svg+xml" in enrol.content.decode()
    for response in (page, enrolment_code, enrol):
        html = response.content.decode()
        assert "style=" not in html
        assert "<style" not in html
        # Scripts only as files of our own (script-src 'self'), never inline code.
        assert all(tag.startswith('<script src="/static/') for tag in re.findall(r"<script[^>]*>", html))
        assert "<script>" not in html
        assert response["Cache-Control"] == "no-store"


def test_the_stylesheet_is_a_static_file():

    assert finders.find("backoffice/backoffice.css")


def test_code_guesses_after_a_stolen_password_are_throttled_like_passwords(client, officer, otp_device):
    assert password_step(client, officer.username)["Location"] == OTP
    good = totp_code(otp_device)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    answers = [client.post(OTP, {"token": wrong}) for _ in range(CLIENT_FAILURES)]
    assert [answer.status_code for answer in answers] == [400] * (CLIENT_FAILURES - 1) + [302]
    # Sent back to the start; the password step is refused from this address now.
    assert LOGIN_FAILED in password_step(client, officer.username).content.decode()
    otp_device.refresh_from_db()
    assert otp_device.last_t == -1  # no code was ever accepted


def test_a_completed_sign_in_forgets_addresses_whose_counts_no_longer_matter(client, officer, otp_device):
    for address in ("198.51.100.1", "198.51.100.2"):
        password_step(english_client(REMOTE_ADDR=address), officer.username, "wrong password, again")
    long_ago = timezone.now() - timedelta(hours=25)
    SignInThrottle.objects.filter(client_key=sign_in_client_key("198.51.100.1")).update(
        window_started_at=long_ago, last_failed_at=long_ago
    )

    password_step(client, officer.username)
    assert client.post(OTP, {"token": totp_code(otp_device)})["Location"] == QUEUE

    assert set(SignInThrottle.objects.filter(officer=officer).values_list("client_key", flat=True)) == {
        SignInThrottle.ACCOUNT_KEY,
        sign_in_client_key(TEST_CLIENT_ADDRESS),
        sign_in_client_key("198.51.100.2"),  # failed within the day: still counts
    }
