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

from cakra.security.identifiers import ascii_digits_check

NUMBER_RANDOM_DIGITS = 14
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8


def _mod97_check_digits(body: str) -> str:
    return f"{98 - (int(body + '00') % 97):02d}"


_FIRST_RANDOM_BODY = 10 ** (NUMBER_RANDOM_DIGITS - 1)


def notice_number_generate() -> str:
    # One draw, uniform over the bodies without a leading zero (a fixed width
    # when a spreadsheet reads it as a number): 9 x 10^13 of them.
    body = str(_FIRST_RANDOM_BODY + secrets.randbelow(9 * _FIRST_RANDOM_BODY))
    return body + _mod97_check_digits(body)


def notice_number_clean(raw: str) -> str:
    """Drop spaces and dashes a citizen may type.

    Letters and digits of any script are kept, so that they fail
    ``notice_number_is_valid`` rather than vanish and leave a number
    that was never typed.
    """
    return "".join(ch for ch in raw if ch.isalnum())[:32]


def notice_number_is_valid(number: str) -> bool:
    # ASCII digits only: "²" passes str.isdigit() and crashes int().
    return len(number) == NUMBER_RANDOM_DIGITS + 2 and ascii_digits_check(number) and int(number) % 97 == 1


def notice_number_display(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


_CODE_BITS = 5  # CODE_ALPHABET has 32 characters


def verification_code_generate() -> str:
    # One draw of 40 random bits, five per character: the same uniform codes
    # as a choice per character, with one call into the OS's generator.
    bits = secrets.randbits(_CODE_BITS * CODE_LENGTH)
    return "".join(CODE_ALPHABET[(bits >> (_CODE_BITS * n)) & 0b11111] for n in range(CODE_LENGTH))
