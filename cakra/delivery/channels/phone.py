"""The recipient of a WhatsApp or SMS message: a valid Indonesian mobile number.

Checked by every phone adapter before it opens a connection, so a number
that cannot be a citizen's phone (a landline, a foreign number, a typo that
slipped past intake, a row written by hand) fails permanently with a reason
and the plan moves on, instead of being retried or reaching a provider.
"""

from __future__ import annotations

import phonenumbers

from cakra.delivery.channels.base import PermanentProviderError

NOT_A_MOBILE = "recipient is not a valid Indonesian mobile number"
_MOBILE_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


def mobile_e164(raw: str) -> str:
    """``raw`` as E.164 (``+62…``), or :class:`PermanentProviderError` when it is
    not a valid mobile number of Indonesia."""
    try:
        parsed = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        raise PermanentProviderError(NOT_A_MOBILE) from None
    if (
        phonenumbers.region_code_for_number(parsed) != "ID"
        or not phonenumbers.is_valid_number(parsed)
        or phonenumbers.number_type(parsed) not in _MOBILE_TYPES
    ):
        raise PermanentProviderError(NOT_A_MOBILE)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
