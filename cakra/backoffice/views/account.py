"""The officer's own account: changing the password, re-authenticating before a sensitive action."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import update_session_auth_hash
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from cakra.backoffice.access import OfficerRequest, officer_reauth_mark, officer_required, safe_next_url
from cakra.backoffice.forms import PasswordChangeForm, ReauthForm
from cakra.backoffice.services import OtpOutcome, officer_password_change, officer_reauthenticate
from cakra.backoffice.views.login import sign_in_form_refused
from cakra.security.ratelimit import client_address


@require_http_methods(["GET", "POST"])
@officer_required
def password_change_view(request: OfficerRequest) -> HttpResponse:
    officer = request.user
    template = "backoffice/password_change.html"
    form = PasswordChangeForm(officer, request.POST or None)
    if request.method == "GET":
        return render(request, template, {"form": form})
    client = client_address(request)
    refused = sign_in_form_refused(request, client=client, form=form, template=template, context={"form": form})
    if refused is not None:
        return refused
    try:
        changed = officer_password_change(
            officer=officer,
            current_password=form.cleaned_data["current_password"],
            new_password=form.cleaned_data["new_password1"],
            keep_session_key=request.session.session_key or "",
            client=client,
        )
    except ValidationError as exc:
        form.add_error("new_password2", exc)
        return render(request, template, {"form": form}, status=400)
    if not changed:
        form.add_error("current_password", _("The current password is wrong."))
        return render(request, template, {"form": form}, status=400)
    # A new key for the current session, which keeps working with the new password
    # (Django ties a session to a hash of the password it was made with).
    update_session_auth_hash(request, officer)
    messages.success(request, _("Your password was changed. Every other session of yours has ended."))
    return redirect("backoffice:queue")


@require_http_methods(["GET", "POST"])
@officer_required
def reauth_view(request: OfficerRequest) -> HttpResponse:
    """A fresh code from the authenticator, asked before sensitive actions."""
    officer = request.user
    template = "backoffice/reauth.html"
    form = ReauthForm(request.POST or None, initial={"next": safe_next_url(request, request.GET.get("next", ""))})
    if request.method == "GET":
        return render(request, template, {"form": form})
    client = client_address(request)
    refused = sign_in_form_refused(request, client=client, form=form, template=template, context={"form": form})
    if refused is not None:
        return refused
    device = getattr(officer, "otp_device", None)
    outcome = officer_reauthenticate(
        officer=officer,
        device_id=device.persistent_id if device is not None else "",
        token=form.cleaned_data["token"],
        client=client,
    )
    if outcome is OtpOutcome.LOCKED:
        # Too many wrong codes from a signed-in session: it may not be the officer's.
        auth_logout(request)
        messages.error(
            request, _("Too many wrong codes. You are signed out; sign-in from this device is paused for a while.")
        )
        return redirect("backoffice:login")
    if outcome is not OtpOutcome.VERIFIED:
        form.add_error("token", _("That code is not valid. Codes change every 30 seconds and work only once."))
        return render(request, template, {"form": form}, status=400)
    officer_reauth_mark(request)
    return redirect(safe_next_url(request, form.cleaned_data.get("next") or "") or "backoffice:queue")
