"""Notice numbers and verification codes.

A notice number is 14 random digits followed by two ISO 7064 MOD 97-10 check
digits (the IBAN scheme): it catches every single-digit typo and every swap of
two neighbouring digits, and it says nothing about the plate, the date or how
many notices came before. 10^14 numbers against some millions issued a year
make a blind guess hopeless, and the portal also wants the plate.

The verification code is separate and short (8 characters of Crockford's
base32, no I/L/O/U), for the citizen to compare between a message or letter and
the portal.
"""

from __future__ import annotations

import secrets

NUMBER_RANDOM_DIGITS = 14
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8


def _mod97_check_digits(body: str) -> str:
    return f"{98 - (int(body + '00') % 97):02d}"


def notice_number_generate() -> str:
    body = "".join(secrets.choice("0123456789") for _ in range(NUMBER_RANDOM_DIGITS))
    if body[0] == "0":  # keep a fixed width when read as a number by spreadsheets
        body = str(secrets.randbelow(9) + 1) + body[1:]
    return body + _mod97_check_digits(body)


def notice_number_clean(raw: str) -> str:
    """Drop spaces and dashes a citizen may type."""
    return "".join(ch for ch in raw if ch.isdigit() or ch.isalpha())[:32]


def notice_number_is_valid(number: str) -> bool:
    return len(number) == NUMBER_RANDOM_DIGITS + 2 and number.isdigit() and int(number) % 97 == 1


def notice_number_display(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def verification_code_generate() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
