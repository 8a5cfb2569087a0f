"""Checking a notice: number + plate, rate limited, with no enumeration oracle.

Rules, and why:

* **Every lookup counts against the client address** (a burst limit per minute
  and a daily one), successes included: they bound how fast one client can
  try numbers at all.
* **Failed tries count against the notice number**, across all clients. That
  is what stops a distributed guess of the plate for a number someone has
  seen (a photo of a letter, a forwarded message). Every try is counted
  *before* the plate is compared (a reservation) and a correct plate gives
  its count back: so only failures stay counted, and an owner who checks the
  same notice many times, or shows it to family, is never locked out by their
  own successes; yet a burst of parallel wrong guesses cannot have more of
  them compared than the limit allows, as it could if failures were only
  counted after the comparison.
* **Once a number is over its limit, every lookup of it answers "too many
  tries", even with the right plate.** If the right plate still went through,
  the limit would not stop a guesser at all: the first correct guess would
  simply succeed. The cost is that someone who knows a number can block its
  lookup for up to an hour; they already hold the owner's letter or message,
  and the window ends by itself.
* **The per-number count is kept whether or not the number exists**, and the
  comparison is made against a never-matching plate for unknown numbers, so
  the limit, the answer and (roughly) the time taken are the same for "no
  such notice" and "wrong plate".
* A number whose check digits are wrong gets a "check what you typed" hint
  instead: anyone can compute the check digits, so the hint reveals nothing,
  but the try still counts against the client.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings

from cakra.portal.selectors import notice_match_lookup
from cakra.registry.plates import InvalidPlateError, plate_compact
from cakra.security.crypto import constant_time_equals
from cakra.security.ratelimit import Limit, hit, refund, reserve


class Outcome(StrEnum):
    GRANTED = "granted"
    NO_MATCH = "no_match"
    NUMBER_LIMITED = "number_limited"


@dataclass(frozen=True)
class LookupResult:
    outcome: Outcome
    notice_id: uuid.UUID | None = None


def _limit(name: str) -> Limit:
    count, seconds = settings.CAKRA_PORTAL_RATE_LIMITS[name]
    return Limit(scope=f"portal-{name}", count=count, seconds=seconds)


def lookup_client_hit(*, client: str) -> bool:
    """Count one lookup by this client; True while it is within both limits."""
    # Both counters advance on every try (no short circuit), so a client held
    # by the burst limit keeps using up its daily allowance too.
    within_burst = hit(_limit("client_burst"), client)
    within_daily = hit(_limit("client_daily"), client)
    return within_burst and within_daily


def lookup_match(*, number: str, plate: str) -> LookupResult:
    """Compare a check-digit-valid ``number`` with the typed ``plate``."""
    reservation = reserve(_limit("number_failures"), number)
    if not reservation.within_limit:
        return LookupResult(Outcome.NUMBER_LIMITED)
    try:
        typed = plate_compact(plate)
    except InvalidPlateError:
        typed = ""  # a malformed plate is simply a plate that does not match
    notice_id, registered = notice_match_lookup(number=number)
    # Always compare, also for unknown numbers, so both failures cost the same.
    plates_equal = constant_time_equals(registered, typed)
    if notice_id is not None and plates_equal:
        refund(reservation)
        return LookupResult(Outcome.GRANTED, notice_id)
    return LookupResult(Outcome.NO_MATCH)
