"""Officer accounts: password (Argon2) plus mandatory TOTP, scoped to a region."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class Officer(AbstractUser):
    class Role(models.TextChoices):
        VALIDATOR = "validator", "Validator (penyidik)"
        SUPERVISOR = "supervisor", "Supervisor"
        AUDITOR = "auditor", "Auditor"
        ADMIN = "admin", "Administrator"

    region = models.ForeignKey(
        "enforcement.Region", on_delete=models.PROTECT, null=True, blank=True, related_name="officers"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VALIDATOR)
    failed_login_count = models.PositiveSmallIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    # A one-time code handed to the officer out of band (``cakra officer
    # create`` / ``reset-otp`` print it), asked for before an authenticator
    # can be set up: the password alone must not let anyone enrol their own
    # device. Stored as a keyed hash; cleared when the authenticator is set up.
    enrolment_code_hash = models.CharField(max_length=64, blank=True)
    enrolment_code_expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.username
