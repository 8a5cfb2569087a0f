"""``cakra officer create | reset-otp | unlock | deactivate | reactivate``: officer account administration.

    cakra officer create --username budi --region METRO [--role validator]
                         [--first-name Budi] [--last-name Santoso] [--password-stdin]
    cakra officer reset-otp --username budi
    cakra officer unlock --username budi
    cakra officer deactivate --username budi    # signs out every session at once
    cakra officer reactivate --username budi

Without ``--password-stdin`` a strong password is generated and printed once;
hand it over in person. ``create`` and ``reset-otp`` also print a one-time
enrolment code (valid 72 hours): the officer needs it to set up an
authenticator, so hand it over by another way than the password. Passwords are never accepted as an argument (they
would sit in shell history and in the process list).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cakra.backoffice.models import Officer
from cakra.backoffice.selectors import officer_get_by_username
from cakra.backoffice.services import (
    officer_create,
    officer_deactivate,
    officer_otp_reset,
    officer_reactivate,
    officer_unlock,
)
from cakra.enforcement.errors import DomainError


class Command(BaseCommand):
    help = "Create officers, reset their authenticator, forget failed sign-ins, deactivate or re-activate them."
    # Tests pass a StringIO here; on the command line it is sys.stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{create,reset-otp,unlock,deactivate,reactivate}"
        )

        create = actions.add_parser("create", help="Create an officer in a region.")
        create.add_argument("--username", required=True)
        create.add_argument("--region", required=True, help="Region code, e.g. METRO.")
        create.add_argument("--role", default=Officer.Role.VALIDATOR, choices=Officer.Role.values)
        create.add_argument("--first-name", default="")
        create.add_argument("--last-name", default="")
        create.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input instead of generating one.",
        )

        reset = actions.add_parser("reset-otp", help="Remove the officer's authenticator; they enrol again.")
        reset.add_argument("--username", required=True)

        unlock = actions.add_parser("unlock", help="Forget failed sign-ins from every address.")
        unlock.add_argument("--username", required=True)

        deactivate = actions.add_parser("deactivate", help="Stop the officer signing in; ends every session now.")
        deactivate.add_argument("--username", required=True)

        reactivate = actions.add_parser("reactivate", help="Let a deactivated officer sign in again.")
        reactivate.add_argument("--username", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "create":
                self._create(options)
            elif action == "reset-otp":
                reset = officer_otp_reset(username=options["username"])
                self.stdout.write(f"Removed {reset.devices_removed} authenticator device(s).")
                self._enrolment_code(reset.enrolment_code)
            elif action == "unlock":
                had_failures = officer_unlock(username=options["username"])
                self.stdout.write("Unlocked." if had_failures else "The account was not locked.")
            elif action == "deactivate":
                officer = officer_get_by_username(username=options["username"])
                was_active = officer_deactivate(officer=officer, actor_type="system", actor_id="cli")
                self.stdout.write(
                    "Deactivated; every session ended." if was_active else "Already deactivated; no session left."
                )
            elif action == "reactivate":
                officer = officer_get_by_username(username=options["username"])
                was_inactive = officer_reactivate(officer=officer, actor_type="system", actor_id="cli")
                self.stdout.write("Re-activated." if was_inactive else "The account was active.")
            else:  # argparse already refuses other values
                raise CommandError(f"unknown action {action!r}")
        except DomainError as exc:
            raise CommandError(exc.message) from exc

    def _create(self, options: dict[str, Any]) -> None:
        password = ""
        if options["password_stdin"]:
            stream: TextIO = options.get("stdin") or sys.stdin
            password = stream.readline().rstrip("\r\n")
            if not password:
                raise CommandError("no password on standard input")
        try:
            created = officer_create(
                username=options["username"],
                region_code=options["region"],
                role=options["role"],
                first_name=options["first_name"],
                last_name=options["last_name"],
                password=password,
            )
        except ValidationError as exc:
            raise CommandError("password refused: " + " ".join(exc.messages)) from exc
        officer = created.officer
        self.stdout.write(
            f"Created officer {officer.username} (id {officer.pk}, role {officer.role}, region {options['region']})."
        )
        if created.generated_password:
            self.stdout.write("Password (shown once, hand it over in person):")
            self.stdout.write(created.generated_password)
        self._enrolment_code(created.enrolment_code)

    def _enrolment_code(self, code: str) -> None:
        self.stdout.write(
            "Enrolment code (shown once, valid 72 hours; hand it over apart from the password, "
            "e.g. by phone or a sealed letter):"
        )
        self.stdout.write(code)
        self.stdout.write(
            "At first sign-in the officer enters it, then sets up an authenticator app (TOTP). "
            "The password alone cannot set one up."
        )
