"""Officer accounts: password (Argon2) plus mandatory TOTP, scoped to a region."""

from __future__ import annotations

from typing import ClassVar

from django.contrib.auth.models import AbstractUser
from django.db import models
from django_otp.plugins.otp_totp.models import TOTPDevice

from cakra.security.columns import SealedColumn
from cakra.security.crypto import key_ring

# The seed length django-otp generates by default (RFC 4226's recommended
# 160 bits). Sealed, it fits django-otp's 80-character key column with a key
# id of up to 15 characters (KeyRing.parse enforces that).
TOTP_SEED_BYTES = 20


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
    # A one-time code handed to the officer out of band (``cakra officer
    # create`` / ``reset-otp`` print it), asked for before an authenticator
    # can be set up: the password alone must not let anyone enrol their own
    # device. Stored as a keyed hash; cleared when the authenticator is set up.
    enrolment_code_hash = models.CharField(max_length=64, blank=True)
    enrolment_code_expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.username


def totp_seed_context(*, user_id: object) -> str:
    """Associated data of a TOTP seed: its column and the officer it belongs
    to (django-otp numbers devices at insert; a device never changes hands).
    A seed moved to another officer's device does not decrypt."""
    return f"otp_totp_totpdevice.key.{user_id}"


def totp_seed_seal(*, seed: bytes, user_id: object) -> str:
    return key_ring().encrypt_bytes(seed, context=totp_seed_context(user_id=user_id))


class OfficerTOTPDevice(TOTPDevice):  # type: ignore[misc] # django-otp ships no type hints
    """django-otp's TOTP device whose ``key`` column holds the seed sealed
    with the field-encryption key ring (``<kid>$<base64>``), never the hex
    seed: a database dump yields no working second factor.

    A proxy, so the table, django-otp's verification (``verify_token``
    with its replay and drift state) and its throttling stay django-otp's
    own; only the one property django-otp reads the seed through is
    replaced. The device's persistent id names this model, so django-otp's
    middleware and ``verify_token`` load it as this class. Create devices
    with ``cakra.backoffice.services.officer_totp_device_create``.
    """

    class Meta:
        proxy = True

    # Found by key rotation (cakra.security.columns) through the app registry.
    sealed_columns: ClassVar[tuple[SealedColumn, ...]] = (
        SealedColumn(
            field_name="key",
            bound_to=("user_id",),
            context_for=lambda values: totp_seed_context(user_id=values[0]),
        ),
    )

    @property
    def bin_key(self) -> bytes:
        return key_ring().decrypt_bytes(self.key, context=totp_seed_context(user_id=self.user_id))


class SignInThrottle(models.Model):
    """Failed sign-ins of one officer, counted per client address and for the account.

    A row per (officer, client address) bounds guesses from one address:
    ``attempts`` counts password and code checks reserved in the current
    window (a check reserves *before* the slow hash, and a success gives the
    reservation back), so parallel guesses cannot outrun the limit. The row
    whose ``client_key`` is ``ACCOUNT_KEY`` counts failures from every
    address, to raise an alert and refuse addresses that have failed while
    the account is under attack. No row ever locks the account itself: an
    attacker who knows a username cannot keep its officer out.
    """

    ACCOUNT_KEY = "*"  # never a client key, which is a 64-character keyed hash

    officer = models.ForeignKey(Officer, on_delete=models.CASCADE, related_name="sign_in_throttles")
    # HMAC of the client address (cakra.security.crypto.lookup_hash): the
    # table never holds addresses in clear.
    client_key = models.CharField(max_length=64)
    attempts = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField()
    last_failed_at = models.DateTimeField(null=True, blank=True)
    alerted_at = models.DateTimeField(null=True, blank=True)  # the account row: this window's alert was raised

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["officer", "client_key"], name="sign_in_throttle_officer_client_unique")
        ]

    def __str__(self) -> str:
        return f"sign-in throttle {self.officer_id}/{self.client_key[:8]}"
