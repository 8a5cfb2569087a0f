"""``cakra officer create | reset-otp | unlock``."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from cakra.audit.models import AuditEvent
from cakra.backoffice.models import Officer, OfficerTOTPDevice, SignInThrottle
from cakra.backoffice.services import (
    officer_enrolment_code_check,
    officer_password_check,
    officer_totp_device_create,
)
from tests.factories import OFFICER_PASSWORD

ENROLMENT_CODE = re.compile(r"^[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}$", re.MULTILINE)


def run(*args, stdin=None):
    out = io.StringIO()
    kwargs = {"stdout": out}
    if stdin is not None:
        kwargs["stdin"] = io.StringIO(stdin)
    call_command("officer", *args, **kwargs)
    return out.getvalue()


def test_create_generates_a_strong_password_and_prints_it_once(region):
    output = run("create", "--username", "budi", "--region", "metro", "--first-name", "Budi")
    officer = Officer.objects.get(username="budi")
    lines = output.splitlines()
    password = lines[lines.index("Password (shown once, hand it over in person):") + 1]
    assert len(password) >= 20
    assert officer.check_password(password)
    assert officer.region == region
    assert officer.role == "validator"
    assert officer.first_name == "Budi"
    event = AuditEvent.objects.get(action="officer.created")
    assert event.object_id == str(officer.pk)
    assert password not in str(event.data)
    assert "budi" not in str(event.data).lower()
    # The enrolment code: printed once, different from the password, and it works.
    [code] = ENROLMENT_CODE.findall(output)
    assert code not in str(event.data)
    assert officer_enrolment_code_check(officer=officer, code=code, client="127.0.0.1").outcome.value == "verified"


def test_create_reads_the_password_from_stdin(region):
    output = run(
        "create",
        "--username",
        "siti",
        "--region",
        "METRO",
        "--role",
        "auditor",
        "--password-stdin",
        stdin="Lampu merah di Sudirman 2026\n",
    )
    officer = Officer.objects.get(username="siti")
    assert officer.check_password("Lampu merah di Sudirman 2026")
    assert officer.role == "auditor"
    assert "Lampu merah" not in output
    assert "Password (shown once" not in output  # nothing generated to show
    assert len(ENROLMENT_CODE.findall(output)) == 1  # the enrolment code still is


def test_create_refuses_a_weak_password(region):
    with pytest.raises(CommandError, match="password refused"):
        run("create", "--username", "weak", "--region", "METRO", "--password-stdin", stdin="password\n")
    assert not Officer.objects.filter(username="weak").exists()


def test_create_refuses_an_unknown_region(region):
    with pytest.raises(CommandError, match="unknown region"):
        run("create", "--username", "nobody", "--region", "ATLANTIS")
    assert not Officer.objects.filter(username="nobody").exists()


def test_create_refuses_a_username_that_differs_only_in_case(officer):
    with pytest.raises(CommandError, match="already exists"):
        run("create", "--username", officer.username.upper(), "--region", "METRO")


def test_reset_otp_removes_devices_and_prints_a_new_enrolment_code(officer):
    officer_totp_device_create(officer=officer, name="phone", confirmed=True)
    output = run("reset-otp", "--username", officer.username)
    assert "Removed 1" in output
    assert not OfficerTOTPDevice.objects.filter(user=officer).exists()
    event = AuditEvent.objects.get(action="officer.otp_reset")
    assert event.object_id == str(officer.pk)
    [code] = ENROLMENT_CODE.findall(output)
    officer.refresh_from_db()
    assert officer.enrolment_code_hash  # stored as a keyed hash only
    assert code not in str(event.data)
    assert code.replace("-", "") not in officer.enrolment_code_hash


def test_unlock_forgets_failed_sign_ins_from_every_address(officer):
    for address in ("198.51.100.1", "198.51.100.2"):
        for _ in range(5):
            officer_password_check(username=officer.username, password="wrong password", client=address)
    assert officer_password_check(username=officer.username, password=OFFICER_PASSWORD, client="198.51.100.1") is None

    assert "Unlocked." in run("unlock", "--username", officer.username)

    assert not SignInThrottle.objects.filter(officer=officer).exists()
    assert officer_password_check(username=officer.username, password=OFFICER_PASSWORD, client="198.51.100.1")
    assert "not locked" in run("unlock", "--username", officer.username)


def test_unknown_username_is_a_command_error(db):
    with pytest.raises(CommandError, match="no officer"):
        run("reset-otp", "--username", "ghost")
    with pytest.raises(CommandError, match="no officer"):
        run("unlock", "--username", "ghost")


def test_create_refuses_a_malformed_username(region):
    with pytest.raises(CommandError, match="invalid username"):
        run("create", "--username", "budi santoso<script>", "--region", "METRO")
    assert not Officer.objects.exists()
