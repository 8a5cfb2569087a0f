"""Parsing identifiers from requests: ASCII only, one place.

``str.isdigit()`` and ``str.isdecimal()`` are true for digits of every
script (superscript ``²``, Arabic-Indic ``٣``, fullwidth one U+FF11), and ``int()``
and ``uuid.UUID()`` read some of them and raise on others. A check with one
and a conversion with the other turns typed text into a 500; a conversion
that succeeds gives a second spelling of the same number or id, which the
rest of the system (database columns, hashes, logs) never sees as equal.
Numbers, ids and lengths in URLs, forms and headers are ASCII by definition,
so everything else is refused here, before any conversion.
"""

from __future__ import annotations

import re
import uuid

_ASCII_DIGITS = re.compile(r"[0-9]+")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def ascii_digits_check(text: str) -> bool:
    """True for one or more of ``0``-``9`` and nothing else (no sign, space or underscore)."""
    return _ASCII_DIGITS.fullmatch(text) is not None


def ascii_int_parse(text: str) -> int | None:
    """The non-negative integer ``text`` spells in ASCII digits, or None."""
    return int(text) if ascii_digits_check(text) else None


def ascii_uuid_parse(text: str) -> uuid.UUID | None:
    """The UUID ``text`` spells in its canonical 8-4-4-4-12 hex form, or None.

    ``uuid.UUID()`` also takes braces, a ``urn:uuid:`` prefix, hyphens
    anywhere and non-ASCII digits: more spellings of one id.
    """
    return uuid.UUID(text) if _CANONICAL_UUID.fullmatch(text) is not None else None
