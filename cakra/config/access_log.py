"""Request lines in logs, without what opens a notice.

A notice number and the plate on the car are all it takes to open a notice
on the portal, and the link in every message carries the number
(``/cek/?n=<number>``): an access log that writes request lines, query
strings or referrers as they came would be a list of keys. Everything a log
line takes from a request passes :func:`request_text_mask` first:

- a 16-digit number (a notice number, or a NIK), with or without
  separators, keeps its first 4 digits: ``1234************``;
- the value of a query parameter that carries a number or a plate
  (``n``, ``number``, ``plate``, ...) is masked whole, whatever its form.

Used by the web server's access log (``cakra.config.gunicorn``) and by
every structlog event (:func:`structlog_mask_processor`).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

VISIBLE_DIGITS = 4
# 16 digits, in groups of four optionally separated by a space, dash, dot or
# an encoded space (+, %20), as citizens type numbers printed in groups; not
# inside a longer word (a UUID's digits stay as they are).
_SIXTEEN_DIGITS = re.compile(r"(?<![\w-])\d{4}(?:(?:[ .\-+]|%20)?\d{4}){3}(?![\w-])")
_SECRET_PARAMETER = re.compile(
    r"(?P<key>(?:^|[?&;])(?:n|no|number|nomor|notice|plate|plat|nopol)=)(?P<value>[^&;#\s\"]*)", re.IGNORECASE
)


def _mask_number(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0).replace("%20", ""))
    return digits[:VISIBLE_DIGITS] + "*" * (len(digits) - VISIBLE_DIGITS)


def _mask_parameter(match: re.Match[str]) -> str:
    value = match.group("value")
    digits = value.replace("%20", "").replace("+", "").replace("-", "").replace(".", "")
    if digits.isdigit():
        masked = digits[:VISIBLE_DIGITS] + "*" * max(len(digits) - VISIBLE_DIGITS, 0)
    else:
        masked = "***" if value else ""  # a plate, or anything else typed there
    return match.group("key") + masked


def request_text_mask(text: str) -> str:
    """``text`` (a path, query string, request line or URL) with notice numbers and plates masked."""
    return _SIXTEEN_DIGITS.sub(_mask_number, _SECRET_PARAMETER.sub(_mask_parameter, text))


def structlog_mask_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask every string value of a log event (paths, queries, messages from libraries)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = request_text_mask(value)
    return event_dict
