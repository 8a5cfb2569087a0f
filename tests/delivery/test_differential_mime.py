"""The MIME writer against Python's ``email`` parser, over generated messages.

:mod:`cakra.delivery.channels.mime` writes messages as bytes instead of
through the ``email`` package. For generated subjects, sender names,
addresses and bodies (Indonesian text, emoji, any Unicode character, long
lines and words, runs of white space, control characters, every kind of
line break), the ``email`` package (``policy=email.policy.default``) must read
back exactly what was given: the same headers decoded, the same parts with
the same bodies and charsets, no defect; and the bytes must be what they
declare: 7-bit (quoted-printable parts, RFC 2047 headers), CRLF line ends,
no line over 998 octets, header lines within 78 where they can be folded.

One reading is not the modern parser's: a display name written as several
encoded words is read with ``email.header.decode_header``, which follows RFC
2047 (white space between two encoded words is not part of the text); the
modern parser puts a space there, whoever wrote the header.
"""

from __future__ import annotations

import email
import uuid
from email import policy
from email.header import decode_header, make_header

import pytest
from django.conf import settings as django_settings
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.email import SmtpEmailAdapter
from cakra.delivery.channels.mime import (
    MAX_HEADER_LINE,
    MAX_LINE,
    QP_MAX_LINE,
    address_header,
    header,
    quoted_printable,
)
from tests.delivery.strategies import ADDRESSES, BODY_TEXT, DISPLAY_NAMES, HEADER_TEXT, SUBJECTS

DIFFERENTIAL = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def _parsed(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _as_received(text: str) -> str:
    """What a reader gets back from a text part: line breaks as the email
    package counts them (CR, LF or CRLF), as LF, and a final one."""
    return (b"\n".join(text.encode().splitlines()) + b"\n").decode()


def _display_name(raw_field: bytes) -> str:
    """The display name of a one-address field (``name: value``), read as RFC 2047 says."""
    legacy = email.message_from_bytes(raw_field + b"\r\n")  # compat32: the raw value, unfolded
    value = str(make_header(decode_header(legacy[raw_field.split(b":", 1)[0].decode()])))
    name, separator, _ = value.rpartition(" <")
    assert separator
    return name


def _folded(lines: list[bytes]) -> bool:
    """Header lines within 78 columns, but for one holding a word too long for any line."""
    return all(len(line) <= MAX_HEADER_LINE or max(map(len, line.split())) > MAX_HEADER_LINE - 8 for line in lines)


def _assert_seven_bit_lines(raw: bytes) -> None:
    assert raw.isascii()
    assert b"\0" not in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= MAX_LINE for line in raw.split(b"\r\n"))


# --- Header fields ------------------------------------------------------------------


@DIFFERENTIAL
@given(value=HEADER_TEXT, name=st.sampled_from(["Subject", "Comments", "X-Cakra-Note-With-A-Long-Name"]))
def test_free_text_reads_back_exactly_as_given(value, name):
    field_name, field_value = header(name, value)
    raw = field_name + b":" + field_value + b"\r\n\r\n"

    parsed = _parsed(raw)
    assert str(parsed[name]) == value
    assert not parsed[name].defects
    _assert_seven_bit_lines(raw)
    assert _folded(raw.split(b"\r\n"))


@DIFFERENTIAL
@given(display_name=DISPLAY_NAMES, address=ADDRESSES)
def test_a_sender_reads_back_as_the_name_and_address_given(display_name, address):
    field_name, field_value = address_header("From", display_name, address)
    raw = field_name + b":" + field_value

    parsed = _parsed(raw + b"\r\n\r\n")["From"]
    [sender] = parsed.addresses
    assert not parsed.defects
    assert sender.addr_spec == address
    if display_name.isascii() and "=?" not in display_name:
        assert sender.display_name == display_name
    else:
        assert _display_name(raw) == display_name
    _assert_seven_bit_lines(raw)
    assert _folded(raw.split(b"\r\n"))


@DIFFERENTIAL
@given(address=ADDRESSES)
def test_a_recipient_reads_back_as_given(address):
    field_name, field_value = header("To", address)

    parsed = _parsed(field_name + b":" + field_value + b"\r\n\r\n")["To"]
    assert [recipient.addr_spec for recipient in parsed.addresses] == [address]
    assert not parsed.defects


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nBcc: x@example.co.id", "a\0b", "a\x0bb", "é\x85b", "é\u2028b"])
@pytest.mark.parametrize("name", ["Subject", "To"])
def test_a_line_break_or_nul_in_a_value_is_refused(name, value):
    with pytest.raises(ValueError, match="line break"):
        header(name, value)
    with pytest.raises(ValueError, match="line break"):
        address_header.__wrapped__("From", value, "etle@korlantas.polri.go.id")


# --- Bodies ---------------------------------------------------------------------------


@DIFFERENTIAL
@given(text=BODY_TEXT)
# A space left at the end of a line that is full: binascii.b2a_qp writes it
# as =20 after measuring the line, one character past quoted-printable's limit.
@example(text="x" * 74 + " \n")
@example(text="x" * 71 + "= \n")
def test_a_body_reads_back_as_given_in_lines_quoted_printable_allows(text):
    encoded = quoted_printable(text)

    part = _parsed(
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n' + encoded
    )
    assert part.get_content().replace("\r\n", "\n") == _as_received(text)
    assert not part.defects
    _assert_seven_bit_lines(encoded)
    assert all(len(line) <= QP_MAX_LINE for line in encoded.split(b"\r\n"))


# --- Whole messages, as the adapter writes them ---------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    subject=SUBJECTS,
    display_name=DISPLAY_NAMES,
    sender=ADDRESSES,
    recipient=ADDRESSES,
    text=BODY_TEXT,
    html=st.one_of(st.just(""), BODY_TEXT),
)
def test_a_message_reads_back_as_the_parts_headers_and_bodies_given(
    subject, display_name, sender, recipient, text, html
):
    adapter = SmtpEmailAdapter(options=django_settings.CAKRA_EMAIL)
    message = OutboundMessage(
        reference=str(uuid.uuid4()),
        recipient=recipient,
        sender=SenderIdentity(address=sender, display_name=display_name),
        subject=subject,
        text=text,
        html=html,
    )

    message_id, raw = adapter.build(message)

    parsed = _parsed(raw)
    assert not parsed.defects
    assert all(not part.defects for part in parsed.walk())
    assert all(not parsed[name].defects for name in parsed)
    assert parsed["Subject"] == subject
    [from_address] = parsed["From"].addresses
    assert from_address.addr_spec == sender
    from_field = next(line for line in raw.split(b"\r\n\r\n")[0].split(b"\r\nFrom:", 1)[1:])
    if display_name.isascii() and "=?" not in display_name:
        assert from_address.display_name == display_name
    else:
        assert _display_name(b"From:" + from_field.split(b"\r\nTo:")[0]) == display_name
    assert [address.addr_spec for address in parsed["To"].addresses] == [recipient]
    # A msg-id may follow folding white space (RFC 5322 3.6.4), which the
    # parser keeps in the header's text: a long sender domain puts it on a line of its own.
    assert parsed["Message-ID"].strip() == message_id == f"<{message.reference}@{sender.rpartition('@')[2].lower()}>"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Content-Language"] == "id, en"

    parts = list(parsed.iter_parts()) if html else [parsed]
    if html:
        assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parts] == (["text/plain", "text/html"] if html else ["text/plain"])
    assert [part.get_content_charset() for part in parts] == ["utf-8"] * len(parts)
    assert [part["Content-Transfer-Encoding"] for part in parts] == ["quoted-printable"] * len(parts)
    bodies = [part.get_content().replace("\r\n", "\n") for part in parts]
    assert bodies == [_as_received(text), *([_as_received(html)] if html else [])]

    # As declared: quoted-printable bodies and RFC 2047 headers are 7-bit.
    _assert_seven_bit_lines(raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= QP_MAX_LINE for line in body.split(b"\r\n"))
    assert _folded([line for line in head.split(b"\r\n") if not line.startswith(b"DKIM-Signature:")])
