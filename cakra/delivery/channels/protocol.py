"""The one rule every outbound protocol field obeys: no CR, LF or NUL.

SMTP commands and RFC 5322 headers are lines: a CR or LF inside an address,
a header name or a header value ends the line early and lets the rest be read
as a new header (``Bcc:``) or a new command (``.`` then ``MAIL FROM``), and a
NUL truncates it in some servers. The fast paths write commands and headers
themselves (smtplib's own guard sits in ``putcmd``, which they bypass), so
each place that writes a field calls :func:`protocol_value_check` and the
refusal is a typed error the adapter reports as a permanent failure: the
same message would be refused again on every retry.
"""

from __future__ import annotations

_FORBIDDEN_TEXT = ("\r", "\n", "\0")
_FORBIDDEN_BYTES = (b"\r", b"\n", b"\0")


class UnsafeProtocolValueError(ValueError):
    """A field to be written into a protocol line holds a line break or NUL.

    Carries the field's name only: the value is personal data (an address)
    or attacker-chosen text, and neither belongs in logs.
    """

    def __init__(self, field: str) -> None:
        super().__init__(f"the {field} cannot contain a line break or NUL")
        self.field = field


def protocol_value_check(*, field: str, value: str | bytes) -> None:
    """Refuse ``value`` for ``field`` if it holds CR, LF or NUL."""
    forbidden = _FORBIDDEN_TEXT if isinstance(value, str) else _FORBIDDEN_BYTES
    if any(character in value for character in forbidden):  # type: ignore[operator]
        raise UnsafeProtocolValueError(field)


def protocol_folded_value_check(*, field: str, value: bytes) -> None:
    """A header value as written: line breaks only as folds (CRLF then a space or tab)."""
    protocol_value_check(field=field, value=value.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t"))
