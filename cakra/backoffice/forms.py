"""Back-office forms: input validation only, no business logic."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import SetPasswordForm
from django.core.validators import MaxLengthValidator
from django.utils.translation import gettext_lazy as _

from cakra.backoffice.services import ENROLMENT_CODE_LENGTH, enrolment_code_normalise
from cakra.enforcement.services import MAX_REASON_LENGTH

OTP_PATTERN = re.compile(r"^[0-9]{6}$")
PASSWORD_MAX_LENGTH = 4096  # bound the work an attacker can ask of the hasher


class LoginForm(forms.Form):
    username = forms.CharField(
        label=_("Username"),
        max_length=150,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    password = forms.CharField(
        label=_("Password"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    next = forms.CharField(required=False, max_length=500, widget=forms.HiddenInput)


class OtpForm(forms.Form):
    token = forms.CharField(
        label=_("6-digit code"),
        max_length=16,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9 ]*",
                "autofocus": True,
            }
        ),
    )

    def clean_token(self) -> str:
        # Authenticator apps show "123 456": accept the space, nothing else.
        token = "".join(str(self.cleaned_data["token"]).split())
        if not OTP_PATTERN.fullmatch(token):
            raise forms.ValidationError(_("Enter the 6 digits shown by your authenticator app."))
        return token


class EnrolmentCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Enrolment code"),
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false", "autofocus": True}
        ),
    )

    def clean_code(self) -> str:
        # As printed: "ABCD-EFGH-JKLM"; case, spaces and dashes do not matter.
        code = enrolment_code_normalise(str(self.cleaned_data["code"]))
        if len(code) != ENROLMENT_CODE_LENGTH:
            raise forms.ValidationError(_("Enter the 12-character enrolment code your administrator gave you."))
        return code


class RejectForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason for rejection"),
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": MAX_REASON_LENGTH}),
        error_messages={"required": _("A reason is required to reject a violation.")},
    )


class ReauthForm(OtpForm):
    next = forms.CharField(required=False, max_length=500, widget=forms.HiddenInput)


class PasswordChangeForm(SetPasswordForm):  # type: ignore[type-arg]
    """Current password (the re-authentication), then the new one twice,
    checked by Django's configured password validators."""

    current_password = forms.CharField(
        label=_("Current password"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )
    field_order = ("current_password", "new_password1", "new_password2")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("new_password1", "new_password2"):
            self.fields[name].validators.append(MaxLengthValidator(PASSWORD_MAX_LENGTH))

    @property
    def min_length(self) -> int:
        """The shortest new password the configured validators accept (for the page's strength hint)."""
        validators = password_validation.get_default_password_validators()
        return max((int(getattr(validator, "min_length", 0)) for validator in validators), default=0)
