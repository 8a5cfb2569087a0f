"""Sign-in (password, then TOTP enrolment with a one-time enrolment code, or verification) and sign-out."""

from __future__ import annotations

from base64 import b32encode

import segno
from django import forms
from django.contrib import messages
from django.contrib.auth import logout as auth_logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from cakra.backoffice.access import (
    PendingLogin,
    officer_session_start,
    pending_login_clear,
    pending_login_device_set,
    pending_login_get,
    pending_login_start,
    safe_next_url,
    verified_officer,
)
from cakra.backoffice.forms import EnrolmentCodeForm, LoginForm, OtpForm
from cakra.backoffice.models import Officer, OfficerTOTPDevice
from cakra.backoffice.services import (
    OtpOutcome,
    officer_confirmed_device,
    officer_enrolment_code_check,
    officer_logout_record,
    officer_otp_enrol_start,
    officer_otp_verify,
    officer_password_check,
)
from cakra.security.identifiers import ascii_int_parse
from cakra.security.ratelimit import Limit, client_address, hit

# Per client address, password and code attempts together, whatever the
# account. Generous enough for a police station behind one NAT address;
# tight enough to stop password spraying across many accounts, which the
# per-officer throttle (cakra.backoffice.throttle) does not see.
LOGIN_RATE_LIMIT = Limit(scope="backoffice-login", count=30, seconds=15 * 60)
HTTP_TOO_MANY_REQUESTS = 429


def _login_failed_text() -> str:
    # One message for unknown user, wrong password, throttled and inactive
    # accounts: the page must not tell which usernames exist.
    return _("Sign-in failed: the username or password is wrong, or sign-in from this device is paused for a while.")


def _rate_limited_text() -> str:
    return _("Too many sign-in attempts from this address. Wait 15 minutes and try again.")


def sign_in_form_refused(
    request: HttpRequest, *, client: str, form: forms.Form, template: str, context: dict[str, object]
) -> HttpResponse | None:
    """The answer to a sign-in form (password, code, re-authentication,
    password change) when this address is over the sign-in limit (429) or
    the form is invalid (400); None when the check may go on."""
    if not hit(LOGIN_RATE_LIMIT, client):
        form.is_valid()
        form.add_error(None, _rate_limited_text())
        return render(request, template, context, status=HTTP_TOO_MANY_REQUESTS)
    if not form.is_valid():
        return render(request, template, context, status=400)
    return None


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    if verified_officer(request) is not None:
        return redirect("backoffice:queue")
    if request.method == "GET":
        form = LoginForm(initial={"next": safe_next_url(request, request.GET.get("next", ""))})
        return render(request, "backoffice/login.html", {"form": form})
    form = LoginForm(request.POST)
    client = client_address(request)
    refused = sign_in_form_refused(
        request, client=client, form=form, template="backoffice/login.html", context={"form": form}
    )
    if refused is not None:
        return refused
    officer = officer_password_check(
        username=form.cleaned_data["username"], password=form.cleaned_data["password"], client=client
    )
    if officer is None:
        form.add_error(None, _login_failed_text())
        return render(request, "backoffice/login.html", {"form": form})
    device = officer_confirmed_device(officer=officer)
    # No authenticator yet: the enrolment code comes first (no device, no
    # secret shown, until it is given), see otp_view.
    pending_login_start(
        request,
        officer_id=officer.pk,
        device_id=device.persistent_id if device is not None else "",
        enrolling=device is None,
        next_url=safe_next_url(request, form.cleaned_data.get("next") or ""),
    )
    return redirect("backoffice:otp")


def _enrolment_context(device: OfficerTOTPDevice) -> dict[str, str]:
    secret = b32encode(device.bin_key).decode()
    return {
        # A data: URI image: the CSP allows img-src data: but no inline markup styles.
        "qr_data_uri": segno.make(device.config_url, error="m").svg_data_uri(scale=5, border=4, light="#fff"),
        "secret_grouped": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
    }


def _restart_sign_in(request: HttpRequest) -> HttpResponse:
    pending_login_clear(request)
    messages.error(request, _("Your sign-in expired or was not started. Please sign in again."))
    return redirect("backoffice:login")


def _pending_officer_and_device(request: HttpRequest) -> tuple[PendingLogin, Officer, OfficerTOTPDevice] | None:
    """The pending sign-in with its officer and device, or None when it expired,
    or the device was reset or confirmed elsewhere meanwhile."""
    pending = pending_login_get(request)
    if pending is None:
        return None
    officer = Officer.objects.select_related("region").filter(pk=pending.officer_id).first()
    device = OfficerTOTPDevice.objects.filter(user_id=pending.officer_id, pk=_device_pk(pending.device_id)).first()
    if officer is None or device is None or device.confirmed == pending.enrolling:
        return None
    return pending, officer, device


@require_http_methods(["GET", "POST"])
def otp_view(request: HttpRequest) -> HttpResponse:
    """Second step: enrol an authenticator (first sign-in: the enrolment code,
    then the new secret) or verify a code."""
    pending = pending_login_get(request)
    if pending is not None and pending.enrolling and not pending.device_id:
        return _enrolment_code_step(request, pending)
    loaded = _pending_officer_and_device(request)
    if loaded is None:
        return _restart_sign_in(request)
    pending, officer, device = loaded
    template = "backoffice/otp_enrol.html" if pending.enrolling else "backoffice/otp_verify.html"
    form = OtpForm(request.POST or None)
    context: dict[str, object] = {"form": form}
    if pending.enrolling:
        context.update(_enrolment_context(device))
    if request.method == "GET":
        return render(request, template, context)
    return _otp_submit(request, pending=pending, officer=officer, form=form, template=template, context=context)


def _enrolment_code_step(request: HttpRequest, pending: PendingLogin) -> HttpResponse:
    """First sign-in: the one-time enrolment code before any secret is created or shown."""
    officer = Officer.objects.filter(pk=pending.officer_id).first()
    if officer is None or officer_confirmed_device(officer=officer) is not None:
        return _restart_sign_in(request)  # gone, or set up elsewhere meanwhile
    template = "backoffice/otp_enrol_code.html"
    form = EnrolmentCodeForm(request.POST or None)
    if request.method == "GET":
        return render(request, template, {"form": form})
    return _enrolment_code_submit(request, officer=officer, form=form, template=template)


def _enrolment_code_submit(
    request: HttpRequest, *, officer: Officer, form: EnrolmentCodeForm, template: str
) -> HttpResponse:
    client = client_address(request)
    refused = sign_in_form_refused(request, client=client, form=form, template=template, context={"form": form})
    if refused is not None:
        return refused
    result = officer_enrolment_code_check(officer=officer, code=form.cleaned_data["code"], client=client)
    if result.outcome is OtpOutcome.LOCKED:
        pending_login_clear(request)
        messages.error(request, _login_failed_text())
        return redirect("backoffice:login")
    if result.outcome is not OtpOutcome.VERIFIED:
        form.add_error("code", _("That enrolment code is not valid or has expired."))
        return render(request, template, {"form": form}, status=400)
    device = officer_otp_enrol_start(officer=officer)
    pending_login_device_set(request, device_id=device.persistent_id)
    return redirect("backoffice:otp")


def _otp_submit(
    request: HttpRequest,
    *,
    pending: PendingLogin,
    officer: Officer,
    form: OtpForm,
    template: str,
    context: dict[str, object],
) -> HttpResponse:
    client = client_address(request)
    refused = sign_in_form_refused(request, client=client, form=form, template=template, context=context)
    if refused is not None:
        return refused
    result = officer_otp_verify(
        officer=officer, device_id=pending.device_id, token=form.cleaned_data["token"], client=client
    )
    if result.outcome is OtpOutcome.LOCKED:
        pending_login_clear(request)
        messages.error(request, _login_failed_text())
        return redirect("backoffice:login")
    if result.outcome is not OtpOutcome.VERIFIED or result.device is None:
        form.add_error("token", _("That code is not valid. Codes change every 30 seconds and work only once."))
        return render(request, template, context, status=400)
    pending_login_clear(request)
    # Rotates the session key (Django's login), marks the session verified
    # with this device (django-otp) and starts its clocks.
    officer_session_start(request, officer=officer, device=result.device)
    if pending.enrolling:
        messages.success(request, _("Your authenticator app is set up. Use it at every sign-in."))
    return redirect(pending.next_url or "backoffice:queue")


def _device_pk(persistent_id: str) -> int:
    # "backoffice.officertotpdevice/<pk>", written by us into the server-side session.
    _, _, pk = persistent_id.rpartition("/")
    return ascii_int_parse(pk) or 0


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    officer = request.user if isinstance(request.user, Officer) and request.user.is_authenticated else None
    auth_logout(request)  # flushes the session, pending sign-in included
    if officer is not None:
        officer_logout_record(officer=officer)
    messages.success(request, _("You are signed out."))
    return redirect("backoffice:login")
