"""The lookup form: notice number + plate."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from cakra.enforcement.numbers import NUMBER_RANDOM_DIGITS, notice_number_clean, notice_number_is_valid

NUMBER_DIGITS = NUMBER_RANDOM_DIGITS + 2
# Room for the digits plus the spaces or dashes people copy from a letter.
NUMBER_MAX_TYPED = 40
PLATE_MAX_TYPED = 16


def notice_number_prefill(raw: str) -> str:
    """The ``?n=`` a message links with: digits only, at most one number long.

    Nothing else from the query string reaches the page, so a crafted link
    cannot inject text into the official portal.
    """
    return "".join(ch for ch in raw[: NUMBER_MAX_TYPED * 2] if ch in "0123456789")[:NUMBER_DIGITS]


class LookupForm(forms.Form):
    number = forms.CharField(
        label=_("Notice number"),
        max_length=NUMBER_MAX_TYPED,
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "off", "spellcheck": "false", "class": "number"}
        ),
        error_messages={"required": _("Type the notice number from your letter or message.")},
    )
    plate = forms.CharField(
        label=_("Registration plate"),
        max_length=PLATE_MAX_TYPED,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "autocapitalize": "characters",
                "spellcheck": "false",
                "placeholder": "B 1234 XYZ",
            }
        ),
        error_messages={"required": _("Type your vehicle's registration plate.")},
    )

    def clean_number(self) -> str:
        number = notice_number_clean(self.cleaned_data["number"])
        if not notice_number_is_valid(number):
            # Check digits are public arithmetic: saying "this cannot be a
            # notice number" tells a guesser nothing they could not compute.
            raise forms.ValidationError(
                _(
                    "This is not a valid notice number. Check the %(digits)s digits you typed "
                    "against your letter or message."
                ),
                code="check_digits",
                params={"digits": NUMBER_DIGITS},
            )
        return number
