"""RFC 5322 / MIME bytes for outgoing email, written directly.

The standard ``email`` package parses every header we set back into an
object tree and folds it again on output: ~1.5 ms for one notice, five times
the RSA signature. The messages the adapter sends have one fixed shape
(a few headers, ``multipart/alternative`` of a text and an HTML part, both
UTF-8 quoted-printable), so they are written here as bytes:

- Headers: ASCII values that fit are written as they are, longer ones folded
  at spaces to 78 columns; anything else (non-ASCII text that needs RFC 2047
  encoded words, a value that already looks like an encoded word, a word too
  long to fold) goes through the ``email`` package's own SMTP policy, which
  is what built every header before. A line break or NUL in a name or value
  is refused (no header injection, :mod:`cakra.delivery.channels.protocol`),
  when a header is made and again for every header a message is made of.
- Bodies: quoted-printable by ``binascii.b2a_qp`` (C), CRLF line ends, lines
  of at most 76 characters, line breaks counted as the ``email`` package
  counts them (CR, LF or CRLF).
- The multipart boundary is 128 random bits after ``=_``, a pair that
  quoted-printable text can never contain, so no body can end a part early.

Two further rules serve the DKIM signature (:mod:`cakra.delivery.channels.dkim`):

- No run of spaces, no tab and no trailing space is left literal in a body
  (the second space of a pair is written ``=20``). Relaxed body
  canonicalisation then leaves the bytes as they are, and the signer skips
  the regular-expression pass that would otherwise cost as much as the RSA
  signature. (The signer checks this itself and canonicalises when it does
  not hold: the rule buys speed, never correctness.)
- No line starts with ``From `` (its ``F`` is written ``=46``): an mbox
  delivery agent would prefix such a line with ``>`` and break the body hash.
  Lines starting with ``.`` are left as they are: SMTP's dot-stuffing is
  undone by the receiving server before the signature is checked.
"""

from __future__ import annotations

import binascii
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr

from cakra.delivery.channels.protocol import (
    UnsafeProtocolValueError,
    protocol_folded_value_check,
    protocol_value_check,
)

CRLF = b"\r\n"
MAX_HEADER_LINE = 78  # RFC 5322's "SHOULD" for a header line, without its CRLF
QP_MAX_LINE = 76  # RFC 2045, the soft line break's "=" included
# Stands in for "a space right after a space" between the two steps of the fast
# quoted-printable path; used only when the text holds no such byte itself.
_SPACE_MARK = b"\x01"
_SPACE_MARK_QP = b"=01"

_SPACE, _EQUALS, _CAPITAL_F = ord(" "), ord("="), ord("F")
_PRINTABLE_FIRST, _PRINTABLE_LAST = ord("!"), ord("~")  # written as they are; the rest as =XX

_TEXT_PART_HEADERS = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
_HTML_PART_HEADERS = b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'


@dataclass(frozen=True, slots=True)
class MimeMessage:
    """A message as header fields and body bytes, the form the DKIM signer reads.

    ``headers`` are ``(name, value)`` with the value exactly as written after
    the colon (leading space and folds included, final CRLF excluded).
    """

    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def __post_init__(self) -> None:
        # Every header of every message passes here, however it was made
        # (``header``, a cached sender line, a constant): the one place a
        # line break that is not a fold cannot get past.
        for name, value in self.headers:
            header_name_check(name.decode("ascii", "replace"))
            protocol_folded_value_check(field=f"{name.decode('ascii', 'replace')} header", value=value)

    def as_bytes(self) -> bytes:
        return b"".join([name + b":" + value + CRLF for name, value in self.headers]) + CRLF + self.body


# --- Headers ---------------------------------------------------------------------


def _fold_ascii(name: str, value: str) -> str | None:
    """``value`` folded before spaces so every line of ``name: value`` fits in
    78 columns; None when a word is too long for that."""
    line = f"{name}: {value}"
    if len(line) <= MAX_HEADER_LINE:
        return " " + value
    if " " not in value and len(value) < MAX_HEADER_LINE:
        # One token too long for the first line (a Message-ID with a long
        # sender domain): on a line of its own, as the email package folds it.
        return "\r\n " + value
    lines = []
    start = 0
    while len(line) - start > MAX_HEADER_LINE:
        cut = line.rfind(" ", start + 1, start + MAX_HEADER_LINE + 1)
        if cut <= len(name) + 1:  # nothing to fold at within the limit
            return None
        lines.append(line[start:cut])
        start = cut
    lines.append(line[start:])
    if any(not part.strip() for part in lines[1:]):  # a folded line may not be all white space
        return None
    return "\r\n".join(lines)[len(name) + 1 :]


def _header_by_policy(name: str, value: str) -> tuple[bytes, bytes]:
    """What ``EmailMessage(policy=SMTP)`` writes for this header (RFC 2047
    encoded words, address quoting, folding); raises ValueError on a line break."""
    folded = SMTP_POLICY.fold_binary(name, SMTP_POLICY.header_store_parse(name, value)[1])
    return name.encode("ascii"), folded[len(name) + 1 : -2]


def header_name_check(name: str) -> None:
    """A header name is printable ASCII without a colon (RFC 5322 ftext)."""
    if not name or not all(_PRINTABLE_FIRST <= ord(character) <= _PRINTABLE_LAST for character in name) or ":" in name:
        raise UnsafeProtocolValueError("header name")


def header(name: str, value: str) -> tuple[bytes, bytes]:
    """One header field as ``(name, value)`` bytes for :class:`MimeMessage`."""
    header_name_check(name)
    # The caller gets no message rather than an injected header.
    protocol_value_check(field=f"{name} header", value=value)
    if value.isascii() and "=?" not in value:
        folded = _fold_ascii(name, value)
        if folded is not None:
            return name.encode("ascii"), folded.encode("ascii")
    return _header_by_policy(name, value)


@functools.lru_cache(maxsize=64)
def address_header(name: str, display_name: str, address: str) -> tuple[bytes, bytes]:
    """A sender header (``From``): a pure function of the region's published
    identity, so it is cached; the key holds all three values, so a cached
    line can never belong to another region or an older identity."""
    return header(name, formataddr((display_name, address)))


# --- Bodies ----------------------------------------------------------------------


def _qp_careful(data: bytes) -> bytes:
    """Quoted-printable one byte at a time, for the rare text the fast path
    does not fit (a tab, a control byte \\x01, a line that would start with
    ``From ``). Same rules, in Python: slow (a few ms), but rare."""
    out = bytearray()
    for line in data.split(CRLF)[:-1]:  # data ends with CRLF
        column = 0
        last_was_space = False
        length = len(line)
        for index, byte in enumerate(line):
            for _ in range(2):  # a soft line break puts the byte at a line start: decide again
                literal = (byte == _SPACE and not last_was_space and index + 1 < length) or (
                    _PRINTABLE_FIRST <= byte <= _PRINTABLE_LAST
                    and byte != _EQUALS
                    and not (column == 0 and byte == _CAPITAL_F and line.startswith(b"rom ", index + 1))
                )
                token = bytes((byte,)) if literal else b"=%02X" % byte
                if column + len(token) < QP_MAX_LINE:  # room left for a soft break's "="
                    break
                out += b"=\r\n"
                column = 0
                last_was_space = False
            out += token
            column += len(token)
            last_was_space = token == b" "
        out += CRLF
    return bytes(out)


def quoted_printable(text: str) -> bytes:
    """``text`` as a UTF-8 quoted-printable body with CRLF line ends."""
    data = text.encode("utf-8")
    # Line breaks as the email package counts them (bytes.splitlines: CR, LF,
    # CRLF), and always a final one. Without a CR (the usual case), replacing
    # LF gives the same bytes in one pass.
    if b"\r" in data:
        data = CRLF.join(data.splitlines()) + CRLF
    else:
        data = data.replace(b"\n", CRLF)
        if not data.endswith(CRLF):
            data += CRLF
    if b"\t" not in data and _SPACE_MARK not in data:
        encoded = binascii.b2a_qp(data.replace(b"  ", b" " + _SPACE_MARK), istext=True)
        encoded = encoded.replace(_SPACE_MARK_QP, b"=20")
        if not encoded.startswith(b"From ") and b"\nFrom " not in encoded:
            return encoded
    return _qp_careful(data)


def alternative_message(
    *, headers: Sequence[tuple[bytes, bytes]], text: str, html: str, content_language: str
) -> MimeMessage:
    """``headers`` then MIME: ``multipart/alternative`` of ``text`` and ``html``,
    or ``text`` alone when there is no HTML."""
    language = header("Content-Language", content_language)
    if not html:
        return MimeMessage(
            headers=(
                *headers,
                (b"MIME-Version", b" 1.0"),
                (b"Content-Type", b' text/plain; charset="utf-8"'),
                (b"Content-Transfer-Encoding", b" quoted-printable"),
                language,
            ),
            body=quoted_printable(text),
        )
    boundary = b"=_" + secrets.token_hex(16).encode("ascii")
    body = b"".join(
        [
            b"--" + boundary + CRLF + _TEXT_PART_HEADERS + CRLF,
            quoted_printable(text),
            CRLF + b"--" + boundary + CRLF + _HTML_PART_HEADERS + CRLF,
            quoted_printable(html),
            CRLF + b"--" + boundary + b"--" + CRLF,
        ]
    )
    return MimeMessage(
        headers=(
            *headers,
            (b"MIME-Version", b" 1.0"),
            (b"Content-Type", b' multipart/alternative;\r\n boundary="' + boundary + b'"'),
            language,
        ),
        body=body,
    )
