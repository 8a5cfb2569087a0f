"""Writes on officer accounts: sign-in (password, TOTP), throttling, enrolment, administration.

Throttling (:mod:`cakra.backoffice.throttle`): every password, enrolment
code and TOTP check reserves an attempt for its (officer, client address)
before it runs, and failures of all three count together, so a stolen
password does not buy unlimited code guesses. Too many failures refuse
that address for that officer, and many across addresses raise an alert
and refuse the addresses that failed; the account itself is never locked.

Enrolment: an officer without an authenticator must give the one-time
**enrolment code** that ``cakra officer create`` / ``reset-otp`` printed
(handed over apart from the password) before a TOTP secret is shown, so a
leaked or guessed initial password cannot be used to enrol someone else's
phone. A wrong code counts as a failed sign-in; the code expires after
``ENROLMENT_CODE_VALIDITY`` and is cleared once the authenticator is set up.

Password hashing (Argon2, ~0.15 s) runs *outside* any transaction: on SQLite
a transaction takes the write lock up front, and no write should wait for a
hash.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import django_otp
import structlog
from django.contrib.auth import password_validation
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from cakra.audit.services import audit_event_record
from cakra.backoffice.models import TOTP_SEED_BYTES, Officer, OfficerTOTPDevice, totp_seed_seal
from cakra.backoffice.selectors import officer_get_by_username
from cakra.backoffice.throttle import (
    SignInAttempt,
    sign_in_attempt_release,
    sign_in_attempt_reserve,
    sign_in_failure_record,
    sign_in_success_record,
    sign_in_throttle_clear,
    sign_in_throttle_policy,
)
from cakra.enforcement.errors import ConflictError, InvalidStateError, NotFoundError
from cakra.enforcement.models import Region
from cakra.security.crypto import constant_time_equals, lookup_hash
from cakra.security.models import Session
from cakra.security.sessions import session_key_stored

logger = structlog.get_logger(__name__)

USERNAME_MAX_LENGTH = 150
GENERATED_PASSWORD_BYTES = 18  # 24 URL-safe characters, ~144 bits

ENROLMENT_CODE_VALIDITY = timedelta(hours=72)
# Crockford-style: no 0/O, 1/I/L, U, so a code read aloud or from paper is typed right.
ENROLMENT_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
ENROLMENT_CODE_LENGTH = 12  # ~59 bits, against a few guesses per address and window
ENROLMENT_CODE_PURPOSE = "officer-enrolment-code"

DECIDING_ROLES = frozenset({Officer.Role.VALIDATOR, Officer.Role.SUPERVISOR, Officer.Role.ADMIN})


class OtpOutcome(enum.Enum):
    VERIFIED = "verified"
    INVALID = "invalid"
    LOCKED = "locked"


@dataclass(frozen=True)
class OtpResult:
    outcome: OtpOutcome
    device: OfficerTOTPDevice | None = None


def officer_can_decide(officer: Officer) -> bool:
    """Auditors read; every other role may validate or reject."""
    return officer.role in DECIDING_ROLES


def _region_code(officer: Officer | None) -> str:
    region = officer.region if officer is not None else None
    return region.code if region is not None else ""


def _officer_own_event(*, officer: Officer, action: str, data: dict[str, object] | None = None) -> None:
    """An audit event of something the officer did to their own account."""
    audit_event_record(
        actor_type="officer",
        actor_id=str(officer.pk),
        action=action,
        object_type="officer",
        object_id=str(officer.pk),
        region_code=_region_code(officer),
        data=data,
    )


def _audit_login_failed(*, officer: Officer | None, stage: str, reason: str) -> None:
    # Never the attempted username (it may be a mistyped password) nor anything typed.
    audit_event_record(
        actor_type="officer",
        actor_id=str(officer.pk) if officer else "",
        action="officer.login_failed",
        object_type="officer",
        object_id=str(officer.pk) if officer else "",
        region_code=_region_code(officer),
        data={"stage": stage, "reason": reason},
    )


def _officer_failure_record(*, officer: Officer, attempt: SignInAttempt, stage: str, reason: str) -> bool:
    """Count one failed check; return True when this address may not try again for now."""
    with transaction.atomic():
        failure = sign_in_failure_record(attempt=attempt)
        _audit_login_failed(officer=officer, stage=stage, reason=reason)
        if failure.alert_raised:
            policy = sign_in_throttle_policy()
            audit_event_record(
                actor_type="system",
                actor_id="sign-in-throttle",
                action="officer.sign_in_alert",
                object_type="officer",
                object_id=str(officer.pk),
                region_code=_region_code(officer),
                data={
                    "failures": policy.account_failures,
                    "hours": int(policy.account_window.total_seconds() // 3600),
                },
            )
    logger.info(
        "backoffice.login_failed", officer_id=officer.pk, stage=stage, client_throttled=failure.client_throttled
    )
    if failure.alert_raised:
        # For whoever watches the logs: someone is guessing this officer's
        # password from many addresses. Ids only.
        logger.warning("backoffice.sign_in_alert", officer_id=officer.pk, region=_region_code(officer))
    return failure.client_throttled


def _audit_refused(*, officer: Officer, stage: str, reason: str) -> None:
    with transaction.atomic():
        _audit_login_failed(officer=officer, stage=stage, reason=reason)
    logger.info("backoffice.login_failed", officer_id=officer.pk, stage=stage, reason=reason)


def officer_password_check(*, username: str, password: str, client: str) -> Officer | None:
    """The first sign-in step, from the client address ``client``. Returns the
    officer only if the password is right and the account may sign in;
    otherwise None, for every reason alike (unknown, wrong password, this
    address throttled, inactive), so the caller cannot tell them apart and
    neither can the person at the keyboard. Every path costs one hash."""
    officer = Officer.objects.select_related("region").filter(username=username).first()
    if officer is None:
        # Hash anyway, so an unknown username costs the same time as a known one.
        make_password(password)
        with transaction.atomic():
            _audit_login_failed(officer=None, stage="password", reason="unknown")
        logger.info("backoffice.login_failed", officer_id=None, stage="password")
        return None
    attempt = sign_in_attempt_reserve(officer=officer, client=client)
    if attempt is None:
        # The same time as a checked password, without checking it.
        make_password(password)
        _audit_refused(officer=officer, stage="password", reason="throttled")
        return None
    password_ok = officer.check_password(password)
    if not officer.is_active or officer.region_id is None:
        sign_in_attempt_release(attempt=attempt)  # not a guess that could ever succeed
        _audit_refused(officer=officer, stage="password", reason="inactive")
        return None
    if not password_ok:
        _officer_failure_record(officer=officer, attempt=attempt, stage="password", reason="bad_password")
        return None
    sign_in_attempt_release(attempt=attempt)
    return officer


def enrolment_code_normalise(code: str) -> str:
    """What the officer typed, as issued: case, spaces and dashes do not matter."""
    return "".join(character for character in code.upper() if character.isalnum())


def _enrolment_code_hash(code: str) -> str:
    return lookup_hash(enrolment_code_normalise(code), purpose=ENROLMENT_CODE_PURPOSE)


def officer_enrolment_code_issue(*, officer: Officer, now: datetime | None = None) -> str:
    """A new one-time enrolment code for ``officer`` (the previous one stops
    working); returned once, for the administrator to hand over, grouped
    in fours (``7KQ2-M9XH-4TRD``). Call inside the transaction that audits why."""
    code = "".join(secrets.choice(ENROLMENT_CODE_ALPHABET) for _ in range(ENROLMENT_CODE_LENGTH))
    officer.enrolment_code_hash = _enrolment_code_hash(code)
    officer.enrolment_code_expires_at = (now or timezone.now()) + ENROLMENT_CODE_VALIDITY
    Officer.objects.filter(pk=officer.pk).update(
        enrolment_code_hash=officer.enrolment_code_hash, enrolment_code_expires_at=officer.enrolment_code_expires_at
    )
    return "-".join(code[i : i + 4] for i in range(0, ENROLMENT_CODE_LENGTH, 4))


def officer_enrolment_code_check(*, officer: Officer, code: str, client: str) -> OtpResult:
    """The enrolment step of a first sign-in: VERIFIED when ``code`` is the
    officer's current, unexpired enrolment code. A wrong or expired code
    counts as a failed sign-in (the same throttle as passwords and TOTP codes)."""
    officer.refresh_from_db(fields=["is_active", "enrolment_code_hash", "enrolment_code_expires_at"])
    if not officer.is_active:
        _audit_refused(officer=officer, stage="enrolment_code", reason="inactive")
        return OtpResult(OtpOutcome.LOCKED)
    attempt = sign_in_attempt_reserve(officer=officer, client=client)
    if attempt is None:
        _audit_refused(officer=officer, stage="enrolment_code", reason="throttled")
        return OtpResult(OtpOutcome.LOCKED)
    valid = (
        bool(officer.enrolment_code_hash)
        and officer.enrolment_code_expires_at is not None
        and officer.enrolment_code_expires_at > timezone.now()
        and constant_time_equals(officer.enrolment_code_hash, _enrolment_code_hash(code))
    )
    if not valid:
        locked = _officer_failure_record(officer=officer, attempt=attempt, stage="enrolment_code", reason="bad_code")
        return OtpResult(OtpOutcome.LOCKED if locked else OtpOutcome.INVALID)
    sign_in_attempt_release(attempt=attempt)
    return OtpResult(OtpOutcome.VERIFIED)


def officer_confirmed_device(*, officer: Officer) -> OfficerTOTPDevice | None:
    device: OfficerTOTPDevice | None = (
        OfficerTOTPDevice.objects.filter(user=officer, confirmed=True).order_by("pk").first()
    )
    return device


def officer_totp_device_create(
    *, officer: Officer, name: str, confirmed: bool, seed: bytes | None = None
) -> OfficerTOTPDevice:
    """A TOTP device with a new random seed (or ``seed``), stored sealed."""
    seed = secrets.token_bytes(TOTP_SEED_BYTES) if seed is None else seed
    device: OfficerTOTPDevice = OfficerTOTPDevice.objects.create(
        user=officer, name=name, confirmed=confirmed, key=totp_seed_seal(seed=seed, user_id=officer.pk)
    )
    return device


def officer_otp_enrol_start(*, officer: Officer) -> OfficerTOTPDevice:
    """A fresh, unconfirmed TOTP device for the officer to scan. Earlier
    unconfirmed devices are removed: only the secret shown last can be confirmed."""
    with transaction.atomic():
        OfficerTOTPDevice.objects.filter(user=officer, confirmed=False).delete()
        device = officer_totp_device_create(officer=officer, name="Cakra", confirmed=False)
        _officer_own_event(officer=officer, action="officer.otp_enrolment_started")
    return device


def officer_otp_verify(*, officer: Officer, device_id: str, token: str, client: str) -> OtpResult:
    """The second sign-in step: a TOTP code against the officer's device.

    ``django_otp.verify_token`` locks the device row and accepts each time
    step at most once (``last_t``), so a code seen over a shoulder or in a
    proxy log cannot be replayed. On an unconfirmed device a valid code
    completes enrolment.
    """
    officer.refresh_from_db(fields=["is_active"])
    if not officer.is_active:
        _audit_refused(officer=officer, stage="otp", reason="inactive")
        return OtpResult(OtpOutcome.LOCKED)
    attempt = sign_in_attempt_reserve(officer=officer, client=client)
    if attempt is None:
        _audit_refused(officer=officer, stage="otp", reason="throttled")
        return OtpResult(OtpOutcome.LOCKED)
    device = django_otp.verify_token(officer, device_id, token)
    if not isinstance(device, OfficerTOTPDevice):
        locked = _officer_failure_record(officer=officer, attempt=attempt, stage="otp", reason="bad_code")
        return OtpResult(OtpOutcome.LOCKED if locked else OtpOutcome.INVALID)
    with transaction.atomic():
        if not device.confirmed:
            OfficerTOTPDevice.objects.filter(pk=device.pk, confirmed=False).update(confirmed=True)
            device.confirmed = True
            # Single use: the code has done its job once a device is set up.
            Officer.objects.filter(pk=officer.pk).update(enrolment_code_hash="", enrolment_code_expires_at=None)
            _officer_own_event(officer=officer, action="officer.otp_enrolled")
        sign_in_success_record(attempt=attempt)
        _officer_own_event(officer=officer, action="officer.login_succeeded")
    logger.info("backoffice.login_succeeded", officer_id=officer.pk)
    return OtpResult(OtpOutcome.VERIFIED, device)


def officer_logout_record(*, officer: Officer) -> None:
    with transaction.atomic():
        _officer_own_event(officer=officer, action="officer.logged_out")


# --- Administration (the ``cakra officer`` command) ----------------------------


@dataclass(frozen=True)
class CreatedOfficer:
    officer: Officer
    generated_password: str  # empty when the password was supplied
    enrolment_code: str  # to hand over apart from the password; needed to set up the authenticator


def officer_create(
    *,
    username: str,
    region_code: str,
    role: str = Officer.Role.VALIDATOR,
    first_name: str = "",
    last_name: str = "",
    password: str = "",
    actor_id: str = "cli",
) -> CreatedOfficer:
    """Create an officer. Without a password a strong one is generated and
    returned once; a supplied one must pass the configured validators."""
    username = username.strip()
    if not username or len(username) > USERNAME_MAX_LENGTH:
        raise InvalidStateError(f"invalid username: 1 to {USERNAME_MAX_LENGTH} characters", field="username")
    try:
        Officer.username_validator(username)
    except ValidationError as exc:
        raise InvalidStateError("invalid username: " + " ".join(exc.messages), field="username") from exc
    if role not in Officer.Role.values:
        raise InvalidStateError(f"unknown role {role!r}", field="role")
    region = Region.objects.filter(code=region_code.strip().upper()).first()
    if region is None:
        raise NotFoundError(f"unknown region {region_code!r}", field="region")
    generated = "" if password else secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    officer = Officer(
        username=username, region=region, role=role, first_name=first_name.strip(), last_name=last_name.strip()
    )
    # Raises django.core.exceptions.ValidationError with every failed rule.
    password_validation.validate_password(password or generated, user=officer)
    officer.set_password(password or generated)  # hashing outside the transaction
    with transaction.atomic():
        # Usernames differing only in case would confuse people reading the audit trail.
        if Officer.objects.filter(username__iexact=username).exists():
            raise ConflictError("an officer with this username already exists", field="username")
        officer.save()
        enrolment_code = officer_enrolment_code_issue(officer=officer)
        audit_event_record(
            actor_type="system",
            actor_id=actor_id,
            action="officer.created",
            object_type="officer",
            object_id=str(officer.pk),
            region_code=region.code,
            data={"role": role, "enrolment_code_expires_at": _iso(officer.enrolment_code_expires_at)},
        )
    return CreatedOfficer(officer=officer, generated_password=generated, enrolment_code=enrolment_code)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


@dataclass(frozen=True)
class OtpReset:
    devices_removed: int
    enrolment_code: str  # to hand over: needed to set up the new authenticator


@transaction.atomic
def officer_otp_reset(*, username: str, actor_id: str = "cli") -> OtpReset:
    """Remove every TOTP device and issue a new enrolment code: the officer
    sets up an authenticator again at next sign-in (with that code), and
    sessions verified with the old device stop being verified at once
    (django-otp resolves the session's device on every request)."""
    officer = officer_get_by_username(username=username)
    removed, _ = OfficerTOTPDevice.objects.filter(user=officer).delete()
    enrolment_code = officer_enrolment_code_issue(officer=officer)
    audit_event_record(
        actor_type="system",
        actor_id=actor_id,
        action="officer.otp_reset",
        object_type="officer",
        object_id=str(officer.pk),
        region_code=_region_code(officer),
        data={"devices_removed": removed, "enrolment_code_expires_at": _iso(officer.enrolment_code_expires_at)},
    )
    return OtpReset(devices_removed=int(removed), enrolment_code=enrolment_code)


@transaction.atomic
def officer_unlock(*, username: str, actor_id: str = "cli") -> bool:
    """Forget the officer's failed sign-ins, from every address: throttled
    addresses may try again at once. Returns whether anything was counted."""
    officer = officer_get_by_username(username=username)
    had_failures = sign_in_throttle_clear(officer=officer)
    audit_event_record(
        actor_type="system",
        actor_id=actor_id,
        action="officer.unlocked",
        object_type="officer",
        object_id=str(officer.pk),
        region_code=_region_code(officer),
        data={"was_locked": had_failures},
    )
    return had_failures


# --- Session life: password change, deactivation, re-authentication, expiry ----


def _officer_sessions_end(*, officer_id: int, keep_session_key: str | None = None) -> int:
    """Delete the officer's sessions (but ``keep_session_key``'s); returns how many.

    A deleted session is gone for good: a request still running on it
    cannot save it back (the store only updates existing rows)."""
    sessions = Session.objects.filter(officer_id=officer_id)
    if keep_session_key:
        kept = session_key_stored(realm=Session.Realm.BACKOFFICE, session_key=keep_session_key)
        sessions = sessions.exclude(session_key=kept)
    deleted, _ = sessions.delete()
    return int(deleted)


def officer_password_change(
    *, officer: Officer, current_password: str, new_password: str, keep_session_key: str, client: str
) -> bool:
    """Re-authenticate with the current password, then set the new one and end
    every other session of the officer. False (nothing changed) when the
    current password is wrong or this address may not try now; a wrong
    password counts as a failed sign-in from ``client`` (reserved before the
    hash), so a stolen session cannot guess the password any faster than the
    sign-in page allows. Raises ``ValidationError`` when the new password
    fails the validators."""
    attempt = sign_in_attempt_reserve(officer=officer, client=client)
    if attempt is None:
        _audit_refused(officer=officer, stage="password_change", reason="throttled")
        return False
    # Hashing (check and set) outside the transaction, see the module docstring.
    if not officer.check_password(current_password):
        _officer_failure_record(officer=officer, attempt=attempt, stage="password_change", reason="bad_password")
        return False
    sign_in_attempt_release(attempt=attempt)
    password_validation.validate_password(new_password, user=officer)
    officer.set_password(new_password)
    with transaction.atomic():
        Officer.objects.filter(pk=officer.pk).update(password=officer.password)
        ended = _officer_sessions_end(officer_id=officer.pk, keep_session_key=keep_session_key)
        _officer_own_event(officer=officer, action="officer.password_changed", data={"sessions_ended": ended})
    logger.info("backoffice.password_changed", officer_id=officer.pk, sessions_ended=ended)
    return True


def _officer_active_set(*, officer: Officer, active: bool, actor_type: str, actor_id: str) -> bool:
    with transaction.atomic():
        changed = bool(Officer.objects.filter(pk=officer.pk, is_active=not active).update(is_active=active))
        # Also when it was inactive already: no session of an inactive officer may live.
        ended = 0 if active else _officer_sessions_end(officer_id=officer.pk)
        audit_event_record(
            actor_type=actor_type,
            actor_id=actor_id,
            action="officer.reactivated" if active else "officer.deactivated",
            object_type="officer",
            object_id=str(officer.pk),
            region_code=_region_code(officer),
            data={"changed": changed, "sessions_ended": ended},
        )
    officer.is_active = active
    logger.info("backoffice.officer_active_set", officer_id=officer.pk, active=active, changed=changed)
    return changed


def officer_deactivate(*, officer: Officer, actor_type: str, actor_id: str) -> bool:
    """Stop the officer signing in and end every session of theirs at once;
    returns whether the account was active."""
    return _officer_active_set(officer=officer, active=False, actor_type=actor_type, actor_id=actor_id)


def officer_reactivate(*, officer: Officer, actor_type: str, actor_id: str) -> bool:
    """Let a deactivated officer sign in again (password and authenticator as before)."""
    return _officer_active_set(officer=officer, active=True, actor_type=actor_type, actor_id=actor_id)


def officer_reauthenticate(*, officer: Officer, device_id: str, token: str, client: str) -> OtpOutcome:
    """A fresh code from the session's own authenticator before a sensitive
    action. Wrong codes count like sign-in failures from ``client`` (reserved
    before the check); each code is accepted once (django-otp), so one seen
    earlier does not help. LOCKED: inactive, or this address may not try now."""
    officer.refresh_from_db(fields=["is_active"])
    if not officer.is_active:
        _audit_refused(officer=officer, stage="reauth", reason="inactive")
        return OtpOutcome.LOCKED
    attempt = sign_in_attempt_reserve(officer=officer, client=client)
    if attempt is None:
        _audit_refused(officer=officer, stage="reauth", reason="throttled")
        return OtpOutcome.LOCKED
    device = django_otp.verify_token(officer, device_id, token)
    if not isinstance(device, OfficerTOTPDevice):
        throttled = _officer_failure_record(officer=officer, attempt=attempt, stage="reauth", reason="bad_code")
        return OtpOutcome.LOCKED if throttled else OtpOutcome.INVALID
    sign_in_attempt_release(attempt=attempt)
    with transaction.atomic():
        _officer_own_event(officer=officer, action="officer.reauthenticated")
    return OtpOutcome.VERIFIED


def officer_session_expired_record(*, officer: Officer, reason: str) -> None:
    """A session refused for age (``absolute``), inactivity (``idle``) or
    missing sign-in times (``unstamped``)."""
    with transaction.atomic():
        _officer_own_event(officer=officer, action="officer.session_expired", data={"reason": reason})
    logger.info("backoffice.session_expired", officer_id=officer.pk, reason=reason)
