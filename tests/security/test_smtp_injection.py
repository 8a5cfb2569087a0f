"""A protocol guard bypassed by a fast path: no CR, LF or NUL reaches an SMTP
command or a header, whichever path writes it, and the DKIM signature covers
(and over-covers) every header that decides what a reader sees."""

from __future__ import annotations

import smtplib
import socketserver
import threading

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ImproperlyConfigured

from cakra.delivery.channels.base import OutboundMessage, PermanentProviderError, SenderIdentity
from cakra.delivery.channels.dkim import dkim_key_load
from cakra.delivery.channels.email import SmtpEmailAdapter, _sendmail
from cakra.delivery.channels.mime import MimeMessage
from cakra.delivery.channels.protocol import UnsafeProtocolValueError
from cakra.simulators.smtp import SimulatedDkimDns
from tests.delivery.helpers import send_one

SENDER = SenderIdentity(address="etle-metro@korlantas.polri.go.id", display_name="ETLE Polda Metro Jaya")
SMUGGLED_COMMAND = "\r\n.\r\nMAIL FROM:<attacker@example.net>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"


class _RecordingRelay(socketserver.ThreadingTCPServer):
    """A loopback SMTP relay offering PIPELINING that keeps every byte it is sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.received = bytearray()
        self.lock = threading.Lock()


class _RecordingHandler(socketserver.StreamRequestHandler):
    server: _RecordingRelay

    def _read_line(self) -> bytes:
        line = self.rfile.readline()
        with self.server.lock:
            self.server.received += line
        return line

    def handle(self) -> None:
        self.wfile.write(b"220 recorder\r\n")
        while line := self._read_line():
            verb = line[:4].upper()
            if verb in {b"EHLO", b"HELO"}:
                self.wfile.write(b"250-recorder\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                while (data := self._read_line()) and data != b".\r\n":
                    pass
                self.wfile.write(b"250 stored\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def relay():
    server = _RecordingRelay()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def adapter(relay, settings):
    adapter = SmtpEmailAdapter(
        options={**settings.CAKRA_EMAIL, "HOST": "127.0.0.1", "PORT": relay.server_address[1], "SECURITY": "none"}
    )
    yield adapter
    adapter.close()


def _message(*, recipient="pemilik@example.co.id", subject="Surat Konfirmasi ETLE", reference="ref-1"):
    return OutboundMessage(
        reference=reference, recipient=recipient, sender=SENDER, subject=subject, text="Teks.\n", html=""
    )


@pytest.mark.parametrize(
    ("recipient", "subject", "reference"),
    [
        ("pemilik@example.co.id\r\nBcc: x@example.net", "Surat", "ref-2"),
        ("pemilik@example.co.id" + SMUGGLED_COMMAND, "Surat", "ref-2"),
        ("pemilik@example.co.id", "Surat\r\nBcc: x@example.net", "ref-2"),
        ("pemilik@example.co.id", "Surat" + SMUGGLED_COMMAND, "ref-2"),
        ("pemilik@example.co.id", "Surat\nContent-Type: text/html", "ref-2"),
        ("pemilik@example.co.id", "Surat\0Bcc: x@example.net", "ref-2"),
        ("pemilik@example.co.id\0", "Surat", "ref-2"),
        ("pemilik@example.co.id", "Surat", "ref-2>\r\nBcc: x@example.net"),  # goes into the Message-ID
    ],
    ids=["to-bcc", "to-smtp", "subject-bcc", "subject-smtp", "subject-lf", "subject-nul", "to-nul", "message-id"],
)
def test_a_line_break_or_nul_in_any_field_is_refused_permanently_before_a_byte_is_sent(
    adapter, relay, recipient, subject, reference
):
    send_one(adapter, _message())  # a session is open: the hostile message would go out on it
    before = bytes(relay.received)

    with pytest.raises(PermanentProviderError, match="line break or NUL"):
        send_one(adapter, _message(recipient=recipient, subject=subject, reference=reference))
    send_one(adapter, _message(reference="ref-3"))  # the session is still clean and usable
    adapter.close()

    after = bytes(relay.received)[len(before) :]
    assert after.count(b"MAIL FROM") == 1
    assert b"example.net" not in after
    assert b"\0" not in after


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        ("etle@korlantas.polri.go.id", "pemilik@example.co.id>\r\nRCPT TO:<victim@example.net"),
        ("etle@korlantas.polri.go.id\r\nRCPT TO:<victim@example.net>", "pemilik@example.co.id"),
        ("etle@korlantas.polri.go.id", "pemilik@example.co.id\0"),
    ],
    ids=["recipient", "sender", "nul"],
)
def test_the_pipelined_envelope_refuses_a_line_break_before_any_command_is_written(relay, sender, recipient):
    connection = smtplib.SMTP("127.0.0.1", relay.server_address[1], timeout=5)
    try:
        connection.ehlo()
        assert connection.has_extn("pipelining")  # the fast path, which smtplib's own guard does not cover
        with pytest.raises(UnsafeProtocolValueError):
            _sendmail(connection, sender=sender, recipient=recipient, data=b"Subject: x\r\n\r\nbody\r\n")
        connection.quit()
    finally:
        connection.close()
    assert b"MAIL FROM" not in relay.received
    assert b"example.net" not in relay.received


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"Subject", b" a\r\nBcc: x@example.net"), (b"Subject", b" a\nb"), (b"Subj\r\nect", b" a"), (b"X", b" \0")],
)
def test_a_message_cannot_be_made_of_a_header_with_a_bare_line_break(name, value):
    with pytest.raises(UnsafeProtocolValueError):
        MimeMessage(headers=((name, value),), body=b"")
    MimeMessage(headers=((b"Subject", b" folded\r\n line"),), body=b"")  # a fold is fine


def _pem(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_a_1024_bit_dkim_key_is_refused_at_load_and_by_the_provider_check(settings):
    weak = _pem(1024)
    with pytest.raises(ImproperlyConfigured, match="2048"):
        dkim_key_load(weak)
    problems = SmtpEmailAdapter.check_options({"HOST": "relay", "PORT": 25, "DKIM_PRIVATE_KEY": weak})
    assert any("DKIM_PRIVATE_KEY" in problem for problem in problems)


@pytest.mark.parametrize(
    "added",
    [
        b"Subject: Surat palsu\r\n",
        b"Content-Type: text/html\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"MIME-Version: 1.0\r\n",
        b"From: Polisi <palsu@example.net>\r\n",
    ],
    ids=["subject", "content-type", "content-transfer-encoding", "mime-version", "from"],
)
@pytest.mark.parametrize("html", ["", "<p>Teks.</p>"], ids=["text", "multipart"])
def test_a_header_added_after_signing_breaks_the_signature(settings, added, html):
    adapter = SmtpEmailAdapter(options=settings.CAKRA_EMAIL)  # builds only: no relay needed
    message = OutboundMessage(
        reference="ref-1", recipient="pemilik@example.co.id", sender=SENDER, subject="Surat", text="Teks.\n", html=html
    )
    _, raw = adapter.build(message)
    dns = SimulatedDkimDns(record=adapter.dkim_key.txt_value(), selector=adapter.dkim_selector)
    signature_end = raw.index(b"\r\n", raw.index(b"b=")) + 2  # relays add their headers at the top
    while raw[signature_end : signature_end + 1] in {b" ", b"\t"}:
        signature_end = raw.index(b"\r\n", signature_end) + 2
    tampered = raw[:signature_end] + added + raw[signature_end:]

    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(tampered, dnsfunc=dns)
