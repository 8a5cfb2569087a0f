"""The local SMTP sink: stores what it receives untouched, verifies DKIM
against its simulated DNS, refuses the magic addresses, serves its pages on
loopback only."""

from __future__ import annotations

import http.client
import json
import mailbox
import os
import re
import select
import signal
import smtplib
import socket
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cakra.delivery.channels.dkim import dkim_key_load
from cakra.delivery.channels.mime import alternative_message, header
from cakra.simulators.smtp_sink import MailSink, SimulatedDkimDns, dkim_check

SELECTOR = "test1"
DOMAIN = "korlantas.polri.go.id"


@pytest.fixture
def dkim_pem(settings):
    return settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]


@pytest.fixture
def sink(tmp_path, dkim_pem):
    with MailSink(maildir=tmp_path / "mail", dkim_private_key=dkim_pem, dkim_selector=SELECTOR) as running:
        yield running


def _message(subject="Surat Konfirmasi ETLE", body="Isi surat.\n", to="pemilik@example.co.id"):
    """A message as the email adapter writes it."""
    return alternative_message(
        headers=(
            header("From", f"ETLE <etle@{DOMAIN}>"),
            header("To", to),
            header("Subject", subject),
            header("Message-ID", f"<t1@{DOMAIN}>"),
        ),
        text=body,
        html="",
        content_language="id",
    )


def _raw(**fields):
    return _message(**fields).as_bytes()


def _signed(pem, message, selector=SELECTOR):
    """Signed as the email adapter signs (the production signer)."""
    signature = dkim_key_load(pem).sign_parts(message.headers, message.body, selector=selector, domain=DOMAIN)
    return signature + message.as_bytes()


def _submit(sink, data, to="pemilik@example.co.id"):
    with smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=5) as client:
        client.sendmail(f"etle@{DOMAIN}", [to], data)


def _get(sink, path, host=None):
    connection = http.client.HTTPConnection("127.0.0.1", sink.http_port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_received_message_is_stored_byte_for_byte(sink, dkim_pem):
    data = _signed(dkim_pem, _message(body="Baris satu.\n.baris dengan titik di depan\n"))

    _submit(sink, data)

    [stored] = sink.messages()
    assert stored.raw == data
    assert len(list((sink.maildir_path / "new").iterdir())) == 1  # a real Maildir any mail client can open


def test_a_message_signed_with_the_configured_key_passes_dkim(sink, dkim_pem):
    _submit(sink, _signed(dkim_pem, _message()))

    [stored] = sink.messages()
    assert stored.dkim.passed
    assert stored.dkim.domain == DOMAIN


def test_a_message_changed_after_signing_fails_dkim(sink, dkim_pem):
    signed = _signed(dkim_pem, _message(body="Denda Rp500.000\n"))

    _submit(sink, signed.replace(b"Rp500.000", b"Rp900.000"))
    _submit(sink, signed.replace(b"Subject: Surat Konfirmasi ETLE", b"Subject: Bayar ke rekening ini"))

    assert [m.dkim.passed for m in sink.messages()] == [False, False]


def test_a_message_signed_with_another_key_or_unsigned_fails_dkim(sink):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    _submit(sink, _signed(other_pem, _message()))
    _submit(sink, _raw())

    assert [m.dkim.passed for m in sink.messages()] == [False, False]


def test_the_simulated_dns_answers_only_the_configured_selector(dkim_pem):
    dns = SimulatedDkimDns(key=dkim_key_load(dkim_pem), selector=SELECTOR)

    answer = dns(f"{SELECTOR}._domainkey.{DOMAIN}.".encode())
    assert answer is not None
    assert answer.startswith(b"v=DKIM1; k=rsa; p=")
    assert dns(f"other._domainkey.{DOMAIN}.") is None
    assert dns(f"{SELECTOR}._domainkey.") is None
    assert not dkim_check(_signed(dkim_pem, _message(), selector="other"), dns=dns).passed


@pytest.mark.parametrize(
    ("recipient", "code"),
    [("bounce@example.co.id", 550), ("throttle.x@example.co.id", 451), ("tempfail@example.co.id", 450)],
)
def test_magic_recipients_are_refused_like_a_real_relay(sink, recipient, code):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _submit(sink, _raw(to=recipient), to=recipient)

    assert refused.value.recipients[recipient][0] == code
    assert sink.messages() == []


def test_the_json_list_is_newest_first_with_the_dkim_verdict(sink, dkim_pem):
    _submit(sink, _signed(dkim_pem, _message(subject="pertama")))
    _submit(sink, _raw(subject="kedua"))

    status, headers, body = _get(sink, "/messages.json")

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    listed = json.loads(body)
    assert [(m["subject"], m["dkim_pass"]) for m in listed] == [("kedua", False), ("pertama", True)]
    assert set(listed[0]) == {"id", "from", "to", "subject", "dkim_pass", "dkim_domain", "received_at"}
    assert listed[1]["to"] == "pemilik@example.co.id"


def test_the_lists_read_only_the_newest_messages_asked_for(sink):
    for subject in ("satu", "dua", "tiga"):
        _submit(sink, _raw(subject=subject))

    _, _, newest = _get(sink, "/messages.json?limit=2")
    _, _, page = _get(sink, "/?limit=1")

    assert [m["subject"] for m in json.loads(newest)] == ["tiga", "dua"]
    assert b"Showing the newest 1 of 3" in page
    assert b"tiga" in page
    assert b"satu" not in page
    for bad in ("0", "-1", "abc", "10001"):
        assert _get(sink, f"/messages.json?limit={bad}")[0] == 400, bad


def test_the_pages_list_and_show_messages_escaped(sink, dkim_pem):
    _submit(sink, _signed(dkim_pem, _message(subject="<script>alert(1)</script>", body="<b>tebal</b>\n")))
    [stored] = sink.messages()

    index_status, index_headers, index = _get(sink, "/")
    show_status, _, show = _get(sink, f"/messages/{stored.id}")
    raw_status, _, raw = _get(sink, f"/messages/{stored.id}/raw")

    assert index_status == show_status == raw_status == 200
    assert b"simulated DNS" in index
    assert b"DKIM pass" in index
    assert b"<script>" not in index
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert b"&lt;b&gt;tebal&lt;/b&gt;" in show
    assert b"text/plain" in show
    assert raw == stored.raw
    assert "default-src 'none'" in index_headers["Content-Security-Policy"]
    assert index_headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_or_malformed_message_ids_are_not_found(sink):
    for path in ("/messages/nope", "/messages/..%2F..%2Fetc%2Fpasswd", "/messages/%2e%2e", "/other"):
        status, _, _ = _get(sink, path)
        assert status == 404, path


def test_the_pages_refuse_a_foreign_host_name(sink):
    # DNS rebinding: a web page re-pointing its own name at 127.0.0.1.
    status, _, body = _get(sink, "/messages.json", host="attacker.example")

    assert status == 421
    assert b"[" not in body
    assert _get(sink, "/", host=f"localhost:{sink.http_port}")[0] == 200


def test_the_sink_listens_on_loopback_and_frees_its_ports(tmp_path, dkim_pem):
    with MailSink(maildir=tmp_path / "m", dkim_private_key=dkim_pem, dkim_selector=SELECTOR) as running:
        smtp_port, http_port = running.smtp_port, running.http_port
        assert running.http_url == f"http://127.0.0.1:{http_port}/"

    with pytest.raises(OSError):  # noqa: PT011 - refused is all there is to say
        smtplib.SMTP("127.0.0.1", smtp_port, timeout=2)
    with pytest.raises(OSError):  # noqa: PT011
        http.client.HTTPConnection("127.0.0.1", http_port, timeout=2).connect()


def test_the_sink_command_runs_until_sigterm(tmp_path, dkim_pem):
    env = {**os.environ, "CAKRA_SINK_MAILDIR": str(tmp_path / "cmd-mail")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cakra.cli", "sink", "--smtp-port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    try:
        smtp_line = process.stdout.readline()
        web_line = process.stdout.readline()
        assert smtp_line.startswith("SMTP sink: smtp://127.0.0.1:")
        assert "cmd-mail" in smtp_line
        smtp_port = int(smtp_line.split("127.0.0.1:")[1].split()[0])
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as client:
            client.sendmail(f"etle@{DOMAIN}", ["pemilik@example.co.id"], _signed(dkim_pem, _message()))
        assert "messages.json" in web_line
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "SMTP sink stopped." in out
    assert len(list((tmp_path / "cmd-mail" / "new").iterdir())) == 1


# --- the SMTP conversation ------------------------------------------------------
def _conversation(sink):
    """A raw socket to the sink, past its greeting: replies are read line by line."""
    connection = socket.create_connection(("127.0.0.1", sink.smtp_port), timeout=5)
    reader = connection.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    return connection, reader


def _replies(reader, count):
    return [reader.readline().rstrip(b"\r\n") for _ in range(count)]


def test_pipelined_commands_are_answered_in_order(sink, dkim_pem):
    first = _signed(dkim_pem, _message(subject="satu"))
    second = _signed(dkim_pem, _message(subject="dua"))
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


def test_a_message_that_cannot_be_stored_is_refused_for_now(sink):
    (sink.maildir_path / "tmp").rmdir()  # nowhere to write

    with pytest.raises(smtplib.SMTPDataError) as refused:
        _submit(sink, _raw())

    assert refused.value.smtp_code == 451


def test_messages_are_maildir_files_written_whole(sink):
    _submit(sink, _raw())
    _submit(sink, _raw(subject="kedua"))

    names = sorted(path.name for path in (sink.maildir_path / "new").iterdir())
    assert list((sink.maildir_path / "tmp").iterdir()) == []  # renamed into new/, nothing left behind
    assert all(re.fullmatch(r"\d+\.M\d+P\d+Q\d+\..+", name) for name in names)
    assert [m.subject for m in sink.messages()] == ["kedua", "Surat Konfirmasi ETLE"]
    assert len(mailbox.Maildir(sink.maildir_path, create=False)) == 2  # any Maildir reader sees them
