"""Who may see a back-office page, and the half-signed-in state between the
password and the one-time code.

A password alone never authenticates a session: after the password step the
session only holds a *pending sign-in* (officer id, device, start time) that
the one-time-code page accepts for ``PENDING_LOGIN_SECONDS``. Django's
``login`` (which rotates the session key) runs only once the code is
verified, so every other page sees an anonymous visitor until then.

A verified session carries its sign-in time, last request time and last
re-authentication time, all checked on the server at every request: it
ends ``CAKRA_OFFICER_SESSION_SECONDS`` after sign-in whatever happens, and
after ``CAKRA_OFFICER_IDLE_SECONDS`` without a request. Sensitive actions
(``reauth_required``) also need a code from the authenticator within the
last ``CAKRA_OFFICER_REAUTH_SECONDS``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, cast
from zoneinfo import ZoneInfo

import django_otp
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import SESSION_KEY
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django_otp.plugins.otp_totp.models import TOTPDevice

from cakra.backoffice.models import Officer
from cakra.backoffice.services import officer_can_decide, officer_session_expired_record
from cakra.security.denials import access_denied_log
from cakra.security.identifiers import ascii_int_parse

PENDING_LOGIN_KEY = "backoffice_pending_login"
PENDING_LOGIN_SECONDS = 5 * 60
BACKOFFICE_PREFIX = "/backoffice/"
# Unix times in the server-side session of a verified officer.
SIGNED_IN_AT_KEY = "backoffice_signed_in_at"
SEEN_AT_KEY = "backoffice_seen_at"
REAUTH_AT_KEY = "backoffice_reauth_at"


class OfficerRequest(HttpRequest):
    """A request that passed ``officer_required``: ``user`` is a verified officer."""

    user: Officer


# Views take (request, **url kwargs); URL kwargs differ per view, hence "...".
AnyView = Callable[..., HttpResponseBase]


def verified_officer(request: HttpRequest) -> Officer | None:
    """The signed-in officer if the session is complete: password *and* TOTP
    verified (django-otp's middleware resolves the device on every request),
    still active, and bound to a region."""
    return _officer_or_refusal(request)[0]


def _officer_or_refusal(request: HttpRequest) -> tuple[Officer | None, str, int | None]:
    """``verified_officer``, or None with why not and whose session it was (for the log)."""
    user = request.user
    if not isinstance(user, Officer) or not user.is_authenticated:
        return None, *_anonymous_refusal(request)
    # OTPMiddleware sets otp_device to the session's verified device, or None.
    if getattr(user, "otp_device", None) is None:
        return None, "second_factor_missing", user.pk
    if not user.is_active or user.region_id is None:
        return None, "inactive" if not user.is_active else "no_region", user.pk
    expired = _officer_session_expiry(request, now=time.time())
    if expired:
        officer_session_expired_record(officer=user, reason=expired)
        auth_logout(request)  # deletes the session row; the cookie is cleared
        messages.info(request, _("Your session has ended. Please sign in again."))
        return None, "session_expired", user.pk
    request.session[SEEN_AT_KEY] = time.time()
    return user, "", user.pk


def _anonymous_refusal(request: HttpRequest) -> tuple[str, int | None]:
    """Why a session without an officer has none, and whose it was if it says."""
    pending = request.session.get(PENDING_LOGIN_KEY)
    if isinstance(pending, dict) and isinstance(pending.get("officer_id"), int):
        return "pending_sign_in", pending["officer_id"]
    # A session still naming an officer Django no longer loads: deactivated
    # (ModelBackend refuses inactive users) or removed.
    officer_id = ascii_int_parse(str(request.session.get(SESSION_KEY) or ""))
    if officer_id is not None:
        return "account_unavailable", officer_id
    return "anonymous", None


def _stamp(request: HttpRequest, key: str) -> float | None:
    value = request.session.get(key)
    return float(value) if isinstance(value, int | float) else None


def _officer_session_expiry(request: HttpRequest, *, now: float) -> str:
    """Why a verified session may no longer be used ("" when it may)."""
    signed_in_at = _stamp(request, SIGNED_IN_AT_KEY)
    seen_at = _stamp(request, SEEN_AT_KEY)
    if signed_in_at is None or seen_at is None:
        return "unstamped"  # not made by officer_session_start: fail closed
    # Only upper bounds: the times are written by the server (the client
    # cannot set them), and web hosts' clocks differ slightly, so a time a
    # little in the future is normal.
    if now - signed_in_at > settings.CAKRA_OFFICER_SESSION_SECONDS:
        return "absolute"
    if now - seen_at > settings.CAKRA_OFFICER_IDLE_SECONDS:
        return "idle"
    return ""


def officer_session_start(request: HttpRequest, *, officer: Officer, device: TOTPDevice) -> None:
    """Password and code verified: the session becomes an officer's.

    Django's login gives it a new key (and drops whatever the session held
    for someone else); the code just given counts as a re-authentication."""
    auth_login(request, officer, backend="django.contrib.auth.backends.ModelBackend")
    django_otp.login(request, device)
    now = time.time()
    request.session[SIGNED_IN_AT_KEY] = now
    request.session[SEEN_AT_KEY] = now
    request.session[REAUTH_AT_KEY] = now


def officer_reauth_mark(request: HttpRequest) -> None:
    """A fresh code was given: a privilege step, so a new session key too."""
    request.session.cycle_key()
    request.session[REAUTH_AT_KEY] = time.time()


def officer_reauth_is_recent(request: HttpRequest) -> bool:
    reauth_at = _stamp(request, REAUTH_AT_KEY)
    return reauth_at is not None and time.time() - reauth_at <= settings.CAKRA_OFFICER_REAUTH_SECONDS


def officer_required(view: AnyView) -> AnyView:
    """Every back-office page: otherwise a redirect to the sign-in page.

    Pages render in the region's time zone (WITA and WIT regions read their
    own clock)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        officer, reason, officer_id = _officer_or_refusal(request)
        if officer is None or officer.region is None:
            access_denied_log(
                request=request, surface="backoffice", reason=reason or "no_region", officer_id=officer_id
            )
            return redirect_to_login(request.get_full_path())
        with timezone.override(ZoneInfo(officer.region.timezone)):
            return view(cast("OfficerRequest", request), *args, **kwargs)

    return wrapped


def decider_required(view: AnyView) -> AnyView:
    """Validating and rejecting: auditors get 403. Apply inside ``officer_required``."""

    @wraps(view)
    def wrapped(request: OfficerRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not officer_can_decide(request.user):
            access_denied_log(request=request, surface="backoffice", reason="not_a_decider", officer_id=request.user.pk)
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def admin_required(view: AnyView) -> AnyView:
    """Officer administration: administrators only. Apply inside ``officer_required``."""

    @wraps(view)
    def wrapped(request: OfficerRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.role != Officer.Role.ADMIN:
            access_denied_log(request=request, surface="backoffice", reason="not_an_admin", officer_id=request.user.pk)
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def officer_object_not_found(
    request: OfficerRequest, *, object_type: str, object_id: uuid.UUID | int | None
) -> Http404:
    """The 404 for an object the officer's region-scoped read did not find,
    logged as a refusal. An unknown id and another region's are not told
    apart: that would take one more query on every miss, and the answer is
    the same either way. ``object_id`` only for internal ids (UUIDs, row
    numbers), never a notice number."""
    access_denied_log(
        request=request,
        surface="backoffice",
        reason="not_found_in_region",
        officer_id=request.user.pk,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
    )
    return Http404()


def reauth_required(view: AnyView) -> AnyView:
    """Sensitive actions: a code from the authenticator within the last
    ``CAKRA_OFFICER_REAUTH_SECONDS``, otherwise nothing is done and the
    officer is sent to the re-authentication page, which returns to a page
    inside the back office (a GET page, or the form's ``next``). Apply
    inside ``officer_required``."""

    @wraps(view)
    def wrapped(request: OfficerRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if officer_reauth_is_recent(request):
            return view(request, *args, **kwargs)
        if request.method == "GET":
            back = request.get_full_path()
        else:
            back = safe_next_url(request, str(request.POST.get("next", "")))
        target = reverse("backoffice:reauth")
        return redirect(f"{target}?{urlencode({'next': back})}" if back else target)

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
