"""Indonesian registration plates (TNKB): ``B 1234 XYZ``.

One to two letters of region code, one to four digits, up to three suffix
letters. Plates are stored normalised with single spaces and compared in a
compact form without spaces.
"""

from __future__ import annotations

import re

PLATE_RE = re.compile(r"^\s*([A-Za-z]{1,2})\s*([0-9]{1,4})\s*([A-Za-z]{0,3})\s*$")


class InvalidPlateError(ValueError):
    pass


def plate_normalise(raw: str) -> str:
    """``"b1234xyz"`` → ``"B 1234 XYZ"``; raises InvalidPlateError otherwise."""
    match = PLATE_RE.match(raw or "")
    if match is None or match.group(2).startswith("0"):
        msg = "not an Indonesian registration plate (e.g. B 1234 XYZ)"
        raise InvalidPlateError(msg)
    prefix, number, suffix = match.group(1).upper(), match.group(2), match.group(3).upper()
    return f"{prefix} {number} {suffix}".strip()


def plate_compact(plate: str) -> str:
    return plate_normalise(plate).replace(" ", "")


def plate_region_code(plate: str) -> str:
    return plate_normalise(plate).split(" ", 1)[0]
