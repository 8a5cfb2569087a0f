"""Counters of failed officer sign-ins: per (officer, client address) and per account.

The policy (``CAKRA_SIGN_IN_THROTTLE``, see settings):

- **Per client address.** Each password, enrolment-code or TOTP check
  *reserves* an attempt with one conditional ``UPDATE`` before anything is
  checked, and is refused when the pair already has ``CLIENT_FAILURES``
  attempts in its window. Reserving first is what bounds parallel guesses:
  a check that read the count and then spent the slow Argon2 hash would let
  every request in flight pass the same read. A success gives the
  reservation back (password, enrolment code) or clears the pair (a
  completed sign-in); a failure keeps it.
- **Per account.** Failures from every address are counted in a longer
  window. Crossing ``ACCOUNT_FAILURES`` raises one alert per window, and
  while the count stays over it, an address that has failed for this
  officer in the window is refused outright; an address with no failures
  still gets its attempt. So an attacker with many addresses gets one
  guess per new address, while the officer, at a desk that has not failed,
  signs in as usual.

Nothing here locks the account, and nothing ends a session: a lockout that
anyone knowing a username can trigger would be a way to keep officers out.

Every statement is a single ``UPDATE`` (or an insert that ignores the
existing row) in autocommit, so no transaction is held around a hash and
concurrent requests cannot lose a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from cakra.backoffice.models import Officer, SignInThrottle
from cakra.security.crypto import lookup_hash

CLIENT_KEY_PURPOSE = "officer-sign-in-client"


@dataclass(frozen=True)
class SignInThrottlePolicy:
    client_failures: int
    client_window: timedelta
    account_failures: int
    account_window: timedelta


def sign_in_throttle_policy() -> SignInThrottlePolicy:
    configured = settings.CAKRA_SIGN_IN_THROTTLE
    return SignInThrottlePolicy(
        client_failures=int(configured["CLIENT_FAILURES"]),
        client_window=timedelta(seconds=int(configured["CLIENT_WINDOW_SECONDS"])),
        account_failures=int(configured["ACCOUNT_FAILURES"]),
        account_window=timedelta(seconds=int(configured["ACCOUNT_WINDOW_SECONDS"])),
    )


@dataclass(frozen=True)
class SignInAttempt:
    """One reserved check: give it back, or record it as a failure."""

    officer_id: int
    client_key: str
    reserved_at: datetime


@dataclass(frozen=True)
class SignInFailure:
    client_throttled: bool  # this address may not try again for this officer in the window
    alert_raised: bool  # this failure took the account over its limit (once per window)


def sign_in_client_key(client: str) -> str:
    return lookup_hash(client, purpose=CLIENT_KEY_PURPOSE)


def _windowed_increment(*, window: timedelta, now: datetime) -> dict[str, Case]:
    """SET clauses that add one to ``attempts``, or start a new window at 1
    when the row's window has ended. Both read the row's old values (SQL
    evaluates every SET expression against the row before the update)."""
    expired = Q(window_started_at__lte=now - window)
    return {
        "attempts": Case(When(expired, then=Value(1)), default=F("attempts") + 1),
        "window_started_at": Case(When(expired, then=Value(now)), default=F("window_started_at")),
    }


def _account_over_limit_and_client_failed(
    *, officer_id: int, client_key: str, policy: SignInThrottlePolicy, now: datetime
) -> bool:
    since = now - policy.account_window
    over = SignInThrottle.objects.filter(
        officer_id=officer_id,
        client_key=SignInThrottle.ACCOUNT_KEY,
        window_started_at__gt=since,
        attempts__gte=policy.account_failures,
    ).exists()
    if not over:
        return False
    failed_here = SignInThrottle.objects.filter(officer_id=officer_id, client_key=client_key, last_failed_at__gt=since)
    return failed_here.exists()


def sign_in_attempt_reserve(*, officer: Officer, client: str) -> SignInAttempt | None:
    """Reserve one check of ``officer``'s password or code from ``client``;
    None when this address may not try now (the caller answers as for a
    wrong password)."""
    policy = sign_in_throttle_policy()
    now = timezone.now()
    client_key = sign_in_client_key(client)
    SignInThrottle.objects.bulk_create(
        [
            SignInThrottle(officer_id=officer.pk, client_key=client_key, window_started_at=now),
            SignInThrottle(officer_id=officer.pk, client_key=SignInThrottle.ACCOUNT_KEY, window_started_at=now),
        ],
        ignore_conflicts=True,
    )
    if _account_over_limit_and_client_failed(officer_id=officer.pk, client_key=client_key, policy=policy, now=now):
        return None
    window_ended = Q(window_started_at__lte=now - policy.client_window)
    reserved = (
        SignInThrottle.objects.filter(officer_id=officer.pk, client_key=client_key)
        .filter(window_ended | Q(attempts__lt=policy.client_failures))
        .update(**_windowed_increment(window=policy.client_window, now=now))
    )
    return SignInAttempt(officer_id=officer.pk, client_key=client_key, reserved_at=now) if reserved else None


def sign_in_attempt_release(*, attempt: SignInAttempt) -> None:
    """Give a reservation back: the check succeeded, or was not a guess.
    A window that started after the reservation is left alone."""
    SignInThrottle.objects.filter(
        officer_id=attempt.officer_id,
        client_key=attempt.client_key,
        attempts__gt=0,
        window_started_at__lte=attempt.reserved_at,
    ).update(attempts=F("attempts") - 1)


def sign_in_failure_record(*, attempt: SignInAttempt) -> SignInFailure:
    """Keep the reservation as a failure, and count it for the account.
    Call inside the transaction that audits the failure."""
    policy = sign_in_throttle_policy()
    now = timezone.now()
    SignInThrottle.objects.filter(officer_id=attempt.officer_id, client_key=attempt.client_key).update(
        last_failed_at=now
    )
    account = SignInThrottle.objects.filter(officer_id=attempt.officer_id, client_key=SignInThrottle.ACCOUNT_KEY)
    window_ended = Q(window_started_at__lte=now - policy.account_window)
    account.update(
        **_windowed_increment(window=policy.account_window, now=now),
        alerted_at=Case(When(window_ended, then=Value(None)), default=F("alerted_at")),
    )
    # Only the update that finds the alert not yet raised raises it: concurrent
    # failures crossing the limit together alert once.
    alert_raised = bool(
        account.filter(attempts__gte=policy.account_failures, alerted_at__isnull=True).update(alerted_at=now)
    )
    # This address has just failed (last_failed_at is now), so it is refused
    # when its own count is full or the account is over its limit: one query.
    client_throttled = (
        SignInThrottle.objects.filter(officer_id=attempt.officer_id)
        .filter(
            Q(client_key=attempt.client_key, attempts__gte=policy.client_failures)
            | Q(
                client_key=SignInThrottle.ACCOUNT_KEY,
                window_started_at__gt=now - policy.account_window,
                attempts__gte=policy.account_failures,
            )
        )
        .exists()
    )
    return SignInFailure(client_throttled=client_throttled, alert_raised=alert_raised)


def sign_in_success_record(*, attempt: SignInAttempt) -> None:
    """A completed sign-in clears its address's count (not the account's:
    the officer succeeding says nothing about guesses from elsewhere), and
    forgets the officer's addresses whose counts can no longer matter, so
    the table does not grow with every address that ever tried."""
    policy = sign_in_throttle_policy()
    now = timezone.now()
    rows = SignInThrottle.objects.filter(officer_id=attempt.officer_id)
    rows.filter(client_key=attempt.client_key).update(attempts=0, last_failed_at=None)
    stale = now - max(policy.client_window, policy.account_window)
    rows.exclude(client_key__in=[attempt.client_key, SignInThrottle.ACCOUNT_KEY]).filter(
        window_started_at__lte=stale
    ).filter(Q(last_failed_at__isnull=True) | Q(last_failed_at__lte=stale)).delete()


def sign_in_throttle_clear(*, officer: Officer) -> bool:
    """Forget every count for ``officer`` (``cakra officer unlock``); returns
    whether there was anything counted."""
    rows = SignInThrottle.objects.filter(officer_id=officer.pk)
    counted = rows.filter(Q(attempts__gt=0) | Q(last_failed_at__isnull=False)).exists()
    rows.delete()
    return counted
