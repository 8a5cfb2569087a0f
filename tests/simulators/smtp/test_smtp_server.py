"""The sink's SMTP server: the conversation as RFC 5321 and RFC 2920 have it, and the refusals of a relay in trouble."""

from __future__ import annotations

import select
import smtplib
import socket

import pytest

from cakra.simulators.smtp import MailSink
from tests.simulators.smtp.mail import DOMAIN, SELECTOR, dkim_signed, raw_message, smtp_submit


@pytest.mark.parametrize(
    ("recipient", "code"),
    [("bounce@example.co.id", 550), ("throttle.x@example.co.id", 451), ("tempfail@example.co.id", 450)],
)
def test_magic_recipients_are_refused_like_a_real_relay(sink, recipient, code):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_submit(sink, raw_message(to=recipient), to=recipient)

    assert refused.value.recipients[recipient][0] == code
    assert sink.messages() == []


def _conversation(sink):
    """A raw socket to the sink, past its greeting: replies are read line by line."""
    connection = socket.create_connection(("127.0.0.1", sink.smtp_port), timeout=5)
    reader = connection.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    return connection, reader


def _replies(reader, count):
    return [reader.readline().rstrip(b"\r\n") for _ in range(count)]


def test_pipelined_commands_are_answered_in_order(sink, dkim_pem):
    first = dkim_signed(dkim_pem, raw_message(subject="satu"))
    second = dkim_signed(dkim_pem, raw_message(subject="dua"))
    connection, reader = _conversation(sink)
    with connection, reader:
        connection.sendall(b"EHLO client.example\r\n")
        ehlo: list[bytes] = []
        while not ehlo or ehlo[-1][3:4] == b"-":
            ehlo.append(reader.readline().rstrip(b"\r\n"))
        assert b"250-PIPELINING" in ehlo
        # RFC 2920: the envelope and DATA in one write, then the content; the
        # end of one message and the next envelope in one write again.
        envelope = f"MAIL FROM:<etle@{DOMAIN}>\r\nRCPT TO:<pemilik@example.co.id>\r\nDATA\r\n".encode()
        connection.sendall(envelope)
        assert [r[:3] for r in _replies(reader, 3)] == [b"250", b"250", b"354"]
        connection.sendall(first + b".\r\n" + envelope)
        assert [r[:3] for r in _replies(reader, 4)] == [b"250", b"250", b"250", b"354"]
        connection.sendall(second + b".\r\nQUIT\r\n")
        assert [r[:3] for r in _replies(reader, 2)] == [b"250", b"221"]

    assert [m.raw for m in sink.messages()] == [second, first]


def test_a_refused_recipient_in_a_pipelined_group_gets_no_data(sink):
    connection, reader = _conversation(sink)
    with connection, reader:
        connection.sendall(b"HELO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bounce@x.example>\r\nDATA\r\n")
        replies = _replies(reader, 4)

    assert [r[:3] for r in replies] == [b"250", b"250", b"550", b"503"]
    assert sink.messages() == []


def test_commands_out_of_order_or_malformed_are_refused(sink):
    connection, reader = _conversation(sink)
    with connection, reader:
        connection.sendall(b"MAIL FROM:<a@b.example>\r\n")
        assert _replies(reader, 1)[0].startswith(b"503")  # no HELO yet
        connection.sendall(b"EHLO c\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
        assert [r[:3] for r in _replies(reader, 7)][-2:] == [b"503", b"503"]  # EHLO takes five lines
        connection.sendall(b"MAIL FROM:<a@b.example> SIZE=99999999999\r\nMAIL FROM:<not an address>\r\n")
        assert [r[:3] for r in _replies(reader, 2)] == [b"552", b"553"]
        connection.sendall(b"MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\nRSET\r\nNOOP\r\n")
        assert [r[:3] for r in _replies(reader, 4)] == [b"250", b"503", b"250", b"250"]
        connection.sendall(b"X" * 2000 + b"\r\nWHAT\r\n")
        too_long, unknown = _replies(reader, 2)
        assert too_long == b"500 Command line too long"
        assert unknown == b'500 Error: command "WHAT" not recognized'


def test_empty_long_lined_and_dot_stuffed_messages(sink):
    connection, reader = _conversation(sink)
    envelope = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<p@example.co.id>\r\nDATA\r\n"
    with connection, reader:
        connection.sendall(b"EHLO c\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        connection.sendall(envelope + b".\r\n")  # an empty message
        assert [r[:3] for r in _replies(reader, 4)] == [b"250", b"250", b"354", b"250"]
        connection.sendall(envelope + b"Subject: x\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
        assert _replies(reader, 4)[-1].startswith(b"500 Line too long")
        # One byte at a time: the end marker split across reads.
        connection.sendall(envelope)
        _replies(reader, 3)
        for byte in b"Subject: titik\r\n\r\n..satu\r\n.\r\n":
            connection.sendall(bytes([byte]))
        assert _replies(reader, 1)[0].startswith(b"250")

    assert [m.raw for m in sink.messages()] == [b"Subject: titik\r\n\r\n.satu\r\n", b""]


def test_the_reply_can_be_delayed_after_the_message_is_stored(tmp_path, dkim_pem):
    with MailSink(maildir=tmp_path / "m", dkim_private_key=dkim_pem, dkim_selector=SELECTOR, reply_delay=0.5) as slow:
        connection, reader = _conversation(slow)
        with connection, reader:
            connection.sendall(b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<p@example.co.id>\r\nDATA\r\n")
            _replies(reader, 4)
            connection.sendall(b"Subject: pelan\r\n\r\nx\r\n.\r\nNOOP\r\n")
            assert select.select([connection], [], [], 0.25)[0] == []  # no answer yet
            assert slow.count() == 1  # but already stored
            # The pipelined NOOP waits behind the delayed answer.
            assert [r[:3] for r in _replies(reader, 2)] == [b"250", b"250"]
