"""Normalising contact points so equal values hash equally."""

from __future__ import annotations

import phonenumbers


class InvalidContactError(ValueError):
    pass


def phone_normalise(raw: str) -> str:
    """Any Indonesian way of writing a number (0812…, +62 812…, 62812…) → E.164."""
    try:
        parsed = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException as exc:
        msg = "not a phone number"
        raise InvalidContactError(msg) from exc
    if not phonenumbers.is_valid_number(parsed):
        msg = "not a valid phone number"
        raise InvalidContactError(msg)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def contact_normalise(*, kind: str, value: str) -> str:
    if kind == "mobile":
        return phone_normalise(value)
    if kind == "email":
        local, sep, domain = value.strip().rpartition("@")
        if not sep or not local or "." not in domain:
            msg = "not an email address"
            raise InvalidContactError(msg)
        return f"{local}@{domain.lower()}"
    return " ".join(value.split())
