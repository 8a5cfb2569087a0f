"""RFC 5322 / MIME bytes for outgoing email, written directly.

The standard ``email`` package parses every header we set back into an
object tree and folds it again on output, which costs several times the RSA
signature (docs/performance.md, "Fast paths"). The messages the adapter sends have one fixed shape
(a few headers, ``multipart/alternative`` of a text and an HTML part, both
UTF-8 quoted-printable), so they are written here as bytes:

- Headers: ASCII values that fit are written as they are, longer ones folded
  at spaces to 78 columns. Anything else (non-ASCII text, a value that
  already looks like an encoded word, a word too long to fold) is written by
  the ``email`` package: free text (``Subject``) as RFC 2047 encoded words
  that hold the whole value, white space included (``email.header.Header``;
  the SMTP policy's folder can leave a space between two encoded words,
  where readers drop it), a sender's display name as encoded words too, made from
  the name itself, and other structured fields (addresses, dates, ids) by
  the SMTP policy. A line break of any kind or a NUL in a name or value is
  refused (no header injection, :mod:`cakra.delivery.channels.protocol`),
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

``tests/delivery/test_differential_mime.py`` has the ``email`` package read
generated messages back: the same headers, parts, bodies and charsets.
"""

from __future__ import annotations

import binascii
import functools
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr

from cakra.delivery.channels.protocol import (
    UnsafeProtocolValueError,
    protocol_folded_value_check,
    protocol_value_check,
)

CRLF = b"\r\n"
MAX_HEADER_LINE = 78  # RFC 5322's "SHOULD" for a header line, without its CRLF
MAX_LINE = 998  # RFC 5322's "MUST" for any line, without its CRLF
QP_MAX_LINE = 76  # RFC 2045, the soft line break's "=" included
# Stands in for "a space right after a space" between the two steps of the fast
# quoted-printable path; used only when the text holds no such byte itself.
_SPACE_MARK = b"\x01"
_SPACE_MARK_QP = b"=01"

# The characters besides CR and LF that Python's str.splitlines ends a line
# at: the email package refuses them in a header value and its encoder turns
# them into folds, so a value holding one could not read back as given.
_OTHER_LINE_BREAKS = re.compile("[\v\f\x1c\x1d\x1e\x85\u2028\u2029]")

# The email package's header classes by name (the registry its policies use).
_HEADER_CLASSES = HeaderRegistry()

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
    """What ``EmailMessage(policy=SMTP)`` writes for this header (address
    quoting, folding); raises ValueError on a line break."""
    folded = SMTP_POLICY.fold_binary(name, SMTP_POLICY.header_store_parse(name, value)[1])
    return name.encode("ascii"), folded[len(name) + 1 : -2]


@functools.cache
def _is_free_text(name: str) -> bool:
    """Whether the email package reads this header as unstructured text
    (``Subject``, an unknown ``X-`` header) rather than addresses, a date or ids."""
    return issubclass(_HEADER_CLASSES[name], UnstructuredHeader)


def _encoded_words(name: str, text: str) -> str:
    """``text`` as RFC 2047 encoded words (UTF-8), folded so that every line
    of ``name: …`` fits in 78 columns.

    Every character, white space included, is inside an encoded word, and
    readers ignore the folding white space between two encoded words: the
    text reads back exactly as given. (The SMTP policy's folder leaves the
    space between two words outside the encoded words it splits them into,
    where readers drop it.) Encoded words use only the characters RFC 2047
    allows in a display name as well.
    """
    return Header(text, "utf-8", maxlinelen=MAX_HEADER_LINE, header_name=name).encode(linesep="\r\n")


def header_name_check(name: str) -> None:
    """A header name is printable ASCII without a colon (RFC 5322 ftext)."""
    if not name or not all(_PRINTABLE_FIRST <= ord(character) <= _PRINTABLE_LAST for character in name) or ":" in name:
        raise UnsafeProtocolValueError("header name")


def header_value_check(*, name: str, value: str) -> None:
    """No line break of any kind (CR, LF, the Unicode ones) and no NUL in a header value."""
    # The caller gets no message rather than an injected header.
    protocol_value_check(field=f"{name} header", value=value)
    if _OTHER_LINE_BREAKS.search(value):
        raise UnsafeProtocolValueError(f"{name} header")


def header(name: str, value: str) -> tuple[bytes, bytes]:
    """One header field as ``(name, value)`` bytes for :class:`MimeMessage`."""
    header_name_check(name)
    header_value_check(name=name, value=value)
    if value.isascii() and "=?" not in value:
        folded = _fold_ascii(name, value)
        # Free text moved whole to the next line would read back with the
        # fold's space in front (readers unfold only): encoded words instead.
        if folded is not None and not (folded.startswith("\r\n") and _is_free_text(name)):
            return name.encode("ascii"), folded.encode("ascii")
    if _is_free_text(name):
        return name.encode("ascii"), b" " + _encoded_words(name, value).encode("ascii")
    if value.isascii() and len(name) + 2 + len(value) <= MAX_LINE:
        # A structured value (an address) with a word too long to fold goes
        # on one line as it is: the SMTP policy's refolding of such a line
        # can drop a display name's quotes or leave an empty line.
        return name.encode("ascii"), b" " + value.encode("ascii")
    return _header_by_policy(name, value)


@functools.lru_cache(maxsize=64)
def address_header(name: str, display_name: str, address: str) -> tuple[bytes, bytes]:
    """A sender header (``From``): a pure function of the region's published
    identity, so it is cached; the key holds all three values, so a cached
    line can never belong to another region or an older identity.

    A display name that is not plain ASCII (or holds ``=?``, which some
    readers decode even inside quotes) is written as encoded words made
    from the name itself, never from a ``formataddr`` string that would be
    parsed again (where a decoded ":" or "," reads as address syntax).
    """
    if (display_name.isascii() and "=?" not in display_name) or not address.isascii():
        return header(name, formataddr((display_name, address)))
    header_name_check(name)
    header_value_check(name=name, value=display_name)
    header_value_check(name=name, value=address)
    encoded = _encoded_words(name, display_name)
    _, fold, last = encoded.rpartition("\r\n")
    column = len(last) if fold else len(name) + 2 + len(last)
    angle_address = f"<{address}>"
    separator = " " if column + 1 + len(angle_address) <= MAX_HEADER_LINE else "\r\n "
    return name.encode("ascii"), f" {encoded}{separator}{angle_address}".encode("ascii")


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
        marked = data.replace(b"  ", b" " + _SPACE_MARK)
        encoded = binascii.b2a_qp(marked, istext=True).replace(_SPACE_MARK_QP, b"=20")
        if (
            not encoded.startswith(b"From ")
            and b"\nFrom " not in encoded
            # b2a_qp writes a space left at a line's end as =20 after the line
            # was measured, which can make it 77 long: then measure again.
            and (b" \r\n" not in marked or max(map(len, encoded.split(CRLF))) <= QP_MAX_LINE)
        ):
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
