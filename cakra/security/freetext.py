"""Text that machines send and people read: one validator for every way in.

A camera system's ``location`` is printed in DKIM-signed official notices and
on the portal, so whoever holds an intake key writes into official mail. A
notice must never carry a payment link, a phone number to call, a look-alike
domain or characters that reorder or hide text (a right-to-left override
turns ``moc.live`` into ``evil.com`` on screen). The rules are therefore an
allow-list, not a filter: Latin letters (with the accents of Indonesian and
regional place names), ASCII digits, space and ``.,()/-'&:``, after NFC
normalisation; and on top of that nothing shaped like a link, a domain, an
e-mail address or a phone number. Anything else is refused, never repaired,
so the stored value is exactly what the sender sent.

Machine identifiers (capture and camera ids) keep their own ASCII pattern in
the schema and are checked here for links only: they legitimately carry long
digit runs (timestamps).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

LOCATION_MAX_LENGTH: Final = 200
LOCATION_PUNCTUATION: Final = frozenset(" .,()/-'&:")
# ASCII letters and the Latin-1 Supplement and Latin Extended-A/B letters
# (é, ñ, ô ...). Other scripts are refused: Cyrillic and Greek letters look
# like Latin ones, which is how look-alike domains are spelt.
_LATIN_RANGES: Final = ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x24F))
# The allowed characters as a regular expression, for the API schema (the
# rules on links and phone numbers are about content, which no schema states).
LOCATION_PATTERN: Final = (
    "^[0-9" + "".join(f"\\u{low:04X}-\\u{high:04X}" for low, high in _LATIN_RANGES) + " .,()/'&:\\-]+$"
)

# A dot between a letter or digit and a letter ("evil.com", "pay.id"): the
# shape of a host name. Place names put a space after an abbreviation's dot
# ("Jl. Sudirman", "Km. 12"), which this leaves alone.
_DOMAIN: Final = re.compile(r"[^\W_]\.[^\W\d_]{2}", re.IGNORECASE)
_LINK_MARKERS: Final = re.compile(r"://|\bwww\b|\bxn--|@|\bhttps?\b", re.IGNORECASE)
# Seven or more digits, possibly split by spaces, dots, dashes, slashes or
# brackets: every Indonesian phone number, however it is written.
_PHONE: Final = re.compile(r"\d(?:[ .\-/()]*\d){6,}")


class FreeTextError(ValueError):
    """The text is refused; ``code`` is stable for API clients, ``message`` never repeats the text."""

    def __init__(self, *, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _is_latin_letter(character: str) -> bool:
    point = ord(character)
    return any(low <= point <= high for low, high in _LATIN_RANGES)


def _allowed_in_location(character: str) -> bool:
    return ("0" <= character <= "9") or character in LOCATION_PUNCTUATION or _is_latin_letter(character)


def text_link_check(*, value: str) -> None:
    """Raise FreeTextError if ``value`` contains anything shaped like a link, a domain or an e-mail address."""
    if _LINK_MARKERS.search(value) or _DOMAIN.search(value):
        raise FreeTextError(code="text_link", message="must not contain a link, domain name or e-mail address")


def location_clean(*, value: str) -> str:
    """The location as it may be stored and printed in a notice (NFC, no surrounding spaces).

    Raises FreeTextError with ``text_empty``, ``text_too_long``,
    ``text_character`` (a character outside the allowed set: controls, format
    characters such as bidirectional overrides and zero-width spaces, line
    breaks, private-use and other scripts), ``text_link`` or ``text_phone``.
    """
    text = unicodedata.normalize("NFC", value).strip(" ")
    if not text:
        raise FreeTextError(code="text_empty", message="must not be empty")
    if len(text) > LOCATION_MAX_LENGTH:
        raise FreeTextError(code="text_too_long", message=f"must be at most {LOCATION_MAX_LENGTH} characters")
    if not all(_allowed_in_location(character) for character in text):
        raise FreeTextError(
            code="text_character",
            message="may only contain Latin letters, digits, spaces and . , ( ) / - ' & :",
        )
    text_link_check(value=text)
    if _PHONE.search(text):
        raise FreeTextError(code="text_phone", message="must not contain a phone number (7 or more digits)")
    return text


def location_is_clean(*, value: str) -> bool:
    """Whether a stored location passes today's rules (rows stored before them may not)."""
    try:
        return location_clean(value=value) == value
    except FreeTextError:
        return False


# What a message or page shows instead of a stored location that fails the
# rules (a row stored before they existed, or written around the intake): a
# notice without its place is still a valid notice; one with a link is not.
LOCATION_WITHHELD: Final = "-"


@functools.lru_cache(maxsize=4096)
def location_for_display(value: str) -> str:
    """The stored location if it passes the rules, else LOCATION_WITHHELD.

    Cached: a region has a few hundred camera sites, and every notice of a
    site repeats its text, so each distinct location is checked once per
    process on the sending path.
    """
    return value if location_is_clean(value=value) else LOCATION_WITHHELD
