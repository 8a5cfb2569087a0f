"""Who may see a back-office page, and the half-signed-in state between the
password and the one-time code.

A password alone never authenticates a session: after the password step the
session only holds a *pending sign-in* (officer id, device, start time) that
the one-time-code page accepts for ``PENDING_LOGIN_SECONDS``. Django's
``login`` (which rotates the session key) runs only once the code is
verified, so every other page sees an anonymous visitor until then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, cast
from zoneinfo import ZoneInfo

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from cakra.backoffice.models import Officer
from cakra.backoffice.services import officer_can_decide

PENDING_LOGIN_KEY = "backoffice_pending_login"
PENDING_LOGIN_SECONDS = 5 * 60
BACKOFFICE_PREFIX = "/backoffice/"


class OfficerRequest(HttpRequest):
    """A request that passed ``officer_required``: ``user`` is a verified officer."""

    user: Officer


# Views take (request, **url kwargs); URL kwargs differ per view, hence "...".
AnyView = Callable[..., HttpResponseBase]


def verified_officer(request: HttpRequest) -> Officer | None:
    """The signed-in officer if the session is complete: password *and* TOTP
    verified (django-otp's middleware resolves the device on every request),
    still active, and bound to a region."""
    user = request.user
    if not isinstance(user, Officer) or not user.is_authenticated:
        return None
    # OTPMiddleware sets otp_device to the session's verified device, or None.
    if getattr(user, "otp_device", None) is None:
        return None
    if not user.is_active or user.region_id is None:
        return None
    return user


def officer_required(view: AnyView) -> AnyView:
    """Every back-office page: otherwise a redirect to the sign-in page.

    Pages render in the region's time zone (WITA and WIT regions read their
    own clock)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        officer = verified_officer(request)
        if officer is None or officer.region is None:
            return redirect_to_login(request.get_full_path())
        with timezone.override(ZoneInfo(officer.region.timezone)):
            return view(cast("OfficerRequest", request), *args, **kwargs)

    return wrapped


def decider_required(view: AnyView) -> AnyView:
    """Validating and rejecting: auditors get 403. Apply inside ``officer_required``."""

    @wraps(view)
    def wrapped(request: OfficerRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not officer_can_decide(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


# --- Pending sign-in (password verified, code not yet) ---------------------------


@dataclass(frozen=True)
class PendingLogin:
    officer_id: int
    device_id: str
    enrolling: bool
    started: float
    next_url: str


def pending_login_start(
    request: HttpRequest, *, officer_id: int, device_id: str, enrolling: bool, next_url: str
) -> None:
    # A new session key for the new privilege level (against fixation); Django's
    # login rotates it once more when the code is verified.
    request.session.cycle_key()
    request.session[PENDING_LOGIN_KEY] = {
        "officer_id": officer_id,
        "device_id": device_id,
        "enrolling": enrolling,
        "started": time.time(),
        "next": next_url,
    }


def pending_login_device_set(request: HttpRequest, *, device_id: str) -> None:
    """The enrolment code was accepted: the sign-in goes on with this new device."""
    raw = request.session.get(PENDING_LOGIN_KEY)
    if isinstance(raw, dict):
        request.session.cycle_key()  # one more privilege step
        request.session[PENDING_LOGIN_KEY] = {**raw, "device_id": device_id}


def pending_login_get(request: HttpRequest) -> PendingLogin | None:
    """The pending sign-in, or None when absent or expired (an expired one is dropped)."""
    raw = request.session.get(PENDING_LOGIN_KEY)
    if not isinstance(raw, dict):
        return None
    pending = PendingLogin(
        officer_id=int(raw["officer_id"]),
        device_id=str(raw["device_id"]),
        enrolling=bool(raw["enrolling"]),
        started=float(raw["started"]),
        next_url=str(raw.get("next", "")),
    )
    if not 0 <= time.time() - pending.started <= PENDING_LOGIN_SECONDS:
        pending_login_clear(request)
        return None
    return pending


def pending_login_clear(request: HttpRequest) -> None:
    request.session.pop(PENDING_LOGIN_KEY, None)


def safe_next_url(request: HttpRequest, candidate: str) -> str:
    """Only a path inside the back office on this host (no open redirect).

    Control and other invisible characters refuse the value outright: a CR/LF
    would otherwise ride, percent-encoded, into the Location header of the
    redirect after sign-in, and browsers disagree on what a tab, a NUL or a
    bidirectional override in a URL means."""
    if (
        candidate
        and candidate.startswith(BACKOFFICE_PREFIX)
        and candidate.isprintable()
        and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return candidate
    return ""
