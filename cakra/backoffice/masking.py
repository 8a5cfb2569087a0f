"""Masking personal data for officer pages.

An officer deciding a violation needs to see *that* the registry matched an
owner who can be reached, not to read (or copy) the owner's identity number,
phone or email. These functions keep just enough to recognise a value when
the owner calls in ("the number ending 5678"), and nothing to harvest.
"""

from __future__ import annotations

MASK = "*"
VISIBLE_NIK_DIGITS = 4
PHONE_VISIBLE_PREFIX = 6  # "+62812": country code and operator prefix
PHONE_VISIBLE_SUFFIX = 4
MIN_PHONE_MASKED = 4


def mask_nik(nik: str) -> str:
    """All but the last four digits: ``************1234``."""
    value = nik.strip()
    if not value:
        return ""
    if len(value) <= VISIBLE_NIK_DIGITS:
        return MASK * len(value)
    return MASK * (len(value) - VISIBLE_NIK_DIGITS) + value[-VISIBLE_NIK_DIGITS:]


def mask_phone(phone: str) -> str:
    """``+6281234565678`` → ``+62812****5678`` (at least four characters hidden)."""
    value = phone.strip()
    if len(value) < PHONE_VISIBLE_PREFIX + PHONE_VISIBLE_SUFFIX + MIN_PHONE_MASKED:
        # Too short to keep both ends and still hide enough: keep only the end.
        keep = min(2, len(value) // 3)
        return MASK * (len(value) - keep) + (value[-keep:] if keep else "")
    hidden = len(value) - PHONE_VISIBLE_PREFIX - PHONE_VISIBLE_SUFFIX
    return value[:PHONE_VISIBLE_PREFIX] + MASK * hidden + value[-PHONE_VISIBLE_SUFFIX:]


def mask_email(email: str) -> str:
    """``andi.wijaya@example.co.id`` → ``a***@example.co.id``."""
    local, sep, domain = email.strip().rpartition("@")
    if not sep or not local:
        return MASK * 3
    return f"{local[0]}{MASK * 3}@{domain}"


def mask_address(address: str) -> str:
    """Only the last part (city / postcode): enough to tell a letter can go out."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) < 2:  # noqa: PLR2004 - a single part would be the whole address
        return MASK * 3
    return f"{MASK * 3}, {parts[-1]}"


def mask_contact(*, kind: str, value: str) -> str:
    if kind == "mobile":
        return mask_phone(value)
    if kind == "email":
        return mask_email(value)
    return mask_address(value)
