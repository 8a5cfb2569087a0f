"""Attacks on officer sign-in throttling: parallel guesses must not outrun the
limit, guesses from one address must not keep the officer out, and guesses
from many addresses must raise an alert."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from cakra.audit.models import AuditEvent
from cakra.backoffice.access import PENDING_LOGIN_KEY
from cakra.backoffice.models import Officer, OfficerTOTPDevice
from tests.backoffice.conftest import totp_code
from tests.factories import OFFICER_PASSWORD

LOGIN = reverse("backoffice:login")
OTP = reverse("backoffice:otp")
QUEUE = reverse("backoffice:queue")
LOGIN_FAILED = "Sign-in failed: the username or password is wrong, or sign-in from this device is paused for a while."
CLIENT_FAILURES = 5  # the default per (officer, client address) and window
PARALLEL_GUESSES = 16
WRONG_GUESS = "a wrong guess, again"


def from_address(address: str) -> Client:
    return Client(HTTP_ACCEPT_LANGUAGE="en", REMOTE_ADDR=address)


def guess(client: Client, officer: Officer, password: str = WRONG_GUESS) -> str:
    response = client.post(LOGIN, {"username": officer.username, "password": password})
    assert response.status_code == 200  # the same page for every refusal
    return response.content.decode()


def sign_in(client: Client, officer: Officer, device: OfficerTOTPDevice) -> None:
    response = client.post(LOGIN, {"username": officer.username, "password": OFFICER_PASSWORD})
    assert response.status_code == 302, "the officer's right password was refused"
    assert response["Location"] == OTP
    assert client.post(OTP, {"token": totp_code(device)})["Location"] == QUEUE
    assert client.get(QUEUE).status_code == 200


@pytest.fixture
def password_checks(monkeypatch):
    """Every evaluation of an officer's stored password hash, across threads."""
    checked: list[str] = []
    lock = threading.Lock()
    real_check = Officer.check_password

    def counting_check(self, raw_password):
        with lock:
            checked.append(raw_password)
        # Argon2 in production takes a noticeable time: keep the window open
        # that a read-the-count-then-hash check would leave to other requests.
        time.sleep(0.05)
        return real_check(self, raw_password)

    monkeypatch.setattr(Officer, "check_password", counting_check)
    return checked


@pytest.mark.django_db(transaction=True)
def test_parallel_guesses_for_one_account_evaluate_at_most_the_limit_of_hashes(officer, password_checks):
    start = threading.Barrier(PARALLEL_GUESSES)

    def one_guess(index: int) -> str:
        try:
            client = from_address("203.0.113.7")
            start.wait(timeout=10)
            return guess(client, officer, f"parallel guess {index}")
        finally:
            connection.close()  # each thread has its own database connection

    with ThreadPoolExecutor(max_workers=PARALLEL_GUESSES) as pool:
        pages = list(pool.map(one_guess, range(PARALLEL_GUESSES)))

    assert all(LOGIN_FAILED in page for page in pages)
    assert len(password_checks) <= CLIENT_FAILURES
    # The refused guesses were never evaluated, whatever they were.
    assert len(password_checks) == CLIENT_FAILURES


def test_guesses_from_one_address_cannot_keep_the_officer_out(officer, otp_device, password_checks):
    attacker = from_address("198.51.100.66")
    for _ in range(3 * CLIENT_FAILURES):
        assert LOGIN_FAILED in guess(attacker, officer)
    assert len(password_checks) == CLIENT_FAILURES
    # The attacker's address is refused now, even with the right password ...
    assert LOGIN_FAILED in guess(attacker, officer, OFFICER_PASSWORD)
    assert PENDING_LOGIN_KEY not in attacker.session
    # ... and the officer, at their own desk, signs in as usual.
    sign_in(from_address("10.20.30.40"), officer, otp_device)
    assert "officer.login_succeeded" in AuditEvent.objects.values_list("action", flat=True)


def test_guesses_from_many_addresses_raise_the_alert_and_refuse_the_addresses_that_failed(
    settings, officer, otp_device, password_checks, caplog
):
    caplog.set_level(logging.INFO)
    account_failures = 3 * (CLIENT_FAILURES - 1)
    settings.CAKRA_SIGN_IN_THROTTLE = {
        "CLIENT_FAILURES": CLIENT_FAILURES,
        "CLIENT_WINDOW_SECONDS": 15 * 60,
        "ACCOUNT_FAILURES": account_failures,  # fewer than the default, to keep the test short
        "ACCOUNT_WINDOW_SECONDS": 24 * 3600,
    }
    attackers = [from_address(f"198.51.100.{n}") for n in (11, 12, 13)]
    for attacker in attackers:  # each stays under its per-address limit
        for _ in range(CLIENT_FAILURES - 1):
            guess(attacker, officer)

    alerts = AuditEvent.objects.filter(action="officer.sign_in_alert")
    assert [event.object_id for event in alerts] == [str(officer.pk)]
    assert alerts[0].data == {"failures": account_failures, "hours": 24}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "sign_in_alert" in r.getMessage()]
    assert len(warnings) == 1
    assert str(officer.pk) in warnings[0].getMessage()
    assert officer.username not in warnings[0].getMessage()

    # Every address that failed is refused now, without its guess being evaluated ...
    checks_before = len(password_checks)
    for attacker in attackers:
        assert LOGIN_FAILED in guess(attacker, officer, OFFICER_PASSWORD)
    assert len(password_checks) == checks_before
    # ... a new address gets one guess, then is refused too ...
    newcomer = from_address("198.51.100.14")
    guess(newcomer, officer)
    assert LOGIN_FAILED in guess(newcomer, officer, OFFICER_PASSWORD)
    assert len(password_checks) == checks_before + 1
    assert alerts.count() == 1  # one alert per window, not one per failure
    # ... and the officer, from an address with no failures, still signs in.
    sign_in(from_address("10.20.30.40"), officer, otp_device)
