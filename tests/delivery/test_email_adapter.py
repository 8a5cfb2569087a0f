"""The adapter interface, the SMTP adapter's error taxonomy and transport
security, and the DKIM DNS record command."""

from __future__ import annotations

import io
import smtplib
import socket

import dkim
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from cakra.delivery.channels import adapter_for_provider
from cakra.delivery.channels.base import (
    ChannelAdapter,
    OutboundMessage,
    PermanentProviderError,
    RetryableProviderError,
    SenderIdentity,
    ThrottledProviderError,
)
from cakra.delivery.channels.dkim import dkim_key_load
from cakra.delivery.channels.email import SmtpEmailAdapter, _smtp_data, smtp_reply_error
from cakra.delivery.models import DeliveryAttempt
from tests.delivery.helpers import send_one
from tests.factories import RegionFactory

SENDER = SenderIdentity(address="etle@korlantas.polri.go.id", display_name="ETLE Polda Metro Jaya")


def _message(recipient="pemilik@example.co.id"):
    return OutboundMessage(
        reference="5f0c6f7e-1111-4a4a-9b9b-000000000001",
        recipient=recipient,
        sender=SENDER,
        subject="Surat Konfirmasi ETLE",
        text="Teks surat.\n",
        html="<p>Teks surat.</p>",
    )


@pytest.mark.parametrize(
    ("code", "reply", "stage", "expected"),
    [
        (550, b"5.1.1 <someone@example.co.id>: Recipient address rejected", "rcpt", PermanentProviderError),
        (554, b"5.7.1 Message refused", "data", PermanentProviderError),
        (421, b"4.7.0 Too many connections, slow down", "rcpt", ThrottledProviderError),
        (451, b"4.7.1 Rate limit exceeded", "rcpt", ThrottledProviderError),
        (450, b"4.2.1 Mailbox busy", "rcpt", RetryableProviderError),
        (452, b"4.3.1 Insufficient system storage", "data", RetryableProviderError),
        (553, b"5.7.1 Sender address not allowed", "mail", RetryableProviderError),
        (421, b"4.3.2 Service shutting down", "session", RetryableProviderError),
    ],
)
def test_smtp_replies_map_onto_the_error_taxonomy(code, reply, stage, expected):
    error = smtp_reply_error(code=code, reply=reply, stage=stage)

    assert type(error) is expected
    assert error.detail.startswith(f"smtp {code} at {stage}")
    assert "@" not in error.detail  # the reply's text (which may quote the address) is not kept


def test_the_email_channel_uses_the_smtp_adapter_by_default(db):
    adapter = adapter_for_provider("smtp")

    assert isinstance(adapter, SmtpEmailAdapter)
    assert adapter.provider == "smtp"
    assert adapter.name == "smtp"  # the default provider's name, recorded on deliveries
    assert 0 < len(adapter.name) <= (DeliveryAttempt._meta.get_field("provider").max_length or 0)


def test_an_unconfigured_provider_or_a_foreign_backend_is_refused(db, settings):
    with pytest.raises(ImproperlyConfigured):
        adapter_for_provider("pigeon")
    entry = settings.CAKRA_PROVIDERS["smtp"]
    settings.CAKRA_PROVIDERS = {"smtp": {**entry, "BACKEND": "cakra.delivery.channels.base.SenderIdentity"}}
    with pytest.raises(ImproperlyConfigured):
        adapter_for_provider("smtp")


def test_an_unknown_transport_security_or_a_broken_dkim_key_is_refused(db, email_relay):
    email_relay(SECURITY="tls-maybe")
    with pytest.raises(ImproperlyConfigured):
        adapter_for_provider("smtp")
    email_relay(SECURITY="none", DKIM_PRIVATE_KEY="not a key")
    with pytest.raises(ImproperlyConfigured):
        adapter_for_provider("smtp")


def test_the_message_repr_hides_recipient_and_content():
    shown = repr(_message())

    assert "pemilik@example.co.id" not in shown
    assert "Teks surat" not in shown
    assert "5f0c6f7e" in shown


class _BrokenAdapter(ChannelAdapter):
    """A provider whose client library fails with data in its message."""

    channel = "email"
    provider = "broken"

    def _send(self, message):
        raise ValueError(f"cannot deliver to {message.recipient}")


def test_an_unexpected_adapter_exception_becomes_a_retryable_error_without_its_text():
    with pytest.raises(RetryableProviderError) as raised:
        send_one(_BrokenAdapter(options={}), _message())

    assert raised.value.detail == "unexpected ValueError"


def test_starttls_required_but_not_offered_refuses_to_send_in_clear(mail_sink, email_relay):
    email_relay(SECURITY="starttls")

    with pytest.raises(RetryableProviderError) as raised:
        send_one(adapter_for_provider("smtp"), _message())

    assert "starttls" in raised.value.detail
    assert mail_sink.messages() == []


def test_implicit_tls_against_a_plain_server_fails_retryably(mail_sink, email_relay):
    email_relay(SECURITY="ssl", TIMEOUT=2)

    with pytest.raises(RetryableProviderError):
        send_one(adapter_for_provider("smtp"), _message())

    assert mail_sink.messages() == []


def test_the_adapter_returns_the_message_id_it_submitted(mail_sink):
    reference = send_one(adapter_for_provider("smtp"), _message())

    [received] = mail_sink.messages()
    assert reference == "<5f0c6f7e-1111-4a4a-9b9b-000000000001@korlantas.polri.go.id>"
    assert received.parsed()["Message-ID"] == reference
    assert received.dkim.passed


def _txt_lookup_from(record_line):
    """A dnsfunc built only from what `cakra dkim dns-record` printed."""
    name, _, strings = record_line.partition(" TXT ")
    value = "".join(part for part in strings.split('"') if part.strip())

    def lookup(query, timeout=5):
        asked = query.decode() if isinstance(query, bytes) else query
        return value.encode() if asked.rstrip(".") == name else None

    return lookup


def test_the_dns_record_command_prints_the_record_that_verifies_our_signatures(db, settings):
    RegionFactory(code="METRO", email_from_address="etle-metro@korlantas.polri.go.id")
    out = io.StringIO()

    call_command("dkim", "dns-record", stdout=out)

    [line] = out.getvalue().splitlines()
    selector = settings.CAKRA_EMAIL["DKIM_SELECTOR"]
    assert line.startswith(f'{selector}._domainkey.korlantas.polri.go.id TXT "v=DKIM1; k=rsa; p=')
    assert all(len(chunk) <= 255 for chunk in line.split('"')[1::2])
    _, signed = SmtpEmailAdapter(options=settings.CAKRA_EMAIL).build(_message())
    assert dkim.verify(signed, dnsfunc=_txt_lookup_from(line))
    other_key = dkim_key_load(settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"])
    assert other_key.txt_value() in line.replace('" "', "")


def test_the_dns_record_command_takes_explicit_domains_and_needs_one(db):
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("dkim", "dns-record", stdout=out)

    call_command("dkim", "dns-record", "--domain", "Etle.Example.go.id", "--domain", "b.example.go.id", stdout=out)

    lines = out.getvalue().splitlines()
    assert [line.split(" ")[0].split("._domainkey.")[1] for line in lines] == ["etle.example.go.id", "b.example.go.id"]


def test_one_smtp_session_carries_many_messages_and_a_broken_one_is_replaced(mail_sink, monkeypatch):
    adapter = adapter_for_provider("smtp")
    opened = []
    real_connect = type(adapter)._connect  # type: ignore[attr-defined]

    def counting_connect(self):
        connection = real_connect(self)
        opened.append(connection)
        return connection

    monkeypatch.setattr(type(adapter), "_connect", counting_connect)
    for _ in range(3):
        send_one(adapter, _message())
    assert len(opened) == 1
    assert len(mail_sink.messages()) == 3

    opened[0].sock.shutdown(socket.SHUT_RDWR)  # the session broke while idle
    send_one(adapter, _message())  # sent over a new session, without failing the message
    assert len(opened) == 2
    assert len(mail_sink.messages()) == 4
    adapter.close()


def _counting_sends(monkeypatch):
    """Count the writes the client makes (smtplib.SMTP.send): one per round trip."""
    writes = []
    real_send = smtplib.SMTP.send

    def send(self, payload):
        writes.append(payload)
        return real_send(self, payload)

    monkeypatch.setattr(smtplib.SMTP, "send", send)
    return writes


def test_a_relay_offering_pipelining_gets_each_message_in_two_round_trips(mail_sink, monkeypatch):
    adapter = adapter_for_provider("smtp")
    send_one(adapter, _message())  # opens the session (EHLO)
    writes = _counting_sends(monkeypatch)
    message = OutboundMessage(
        reference="5f0c6f7e-1111-4a4a-9b9b-000000000002",
        recipient="pemilik@example.co.id",
        sender=SENDER,
        subject="Surat Konfirmasi ETLE",
        text=".\n.. a line of dots\nFrom the camera\n",  # dot-stuffing must round-trip
        html="<p>.</p>",
    )

    send_one(adapter, message)

    assert len(writes) == 2  # MAIL + RCPT + DATA in one write, then the message
    received = mail_sink.messages()[0]
    assert received.dkim.passed  # byte for byte what was signed
    assert received.text_body().replace("\r\n", "\n") == message.text
    adapter.close()


def test_a_pipelined_refusal_is_reported_and_the_session_goes_on(mail_sink, monkeypatch):
    adapter = adapter_for_provider("smtp")
    send_one(adapter, _message())
    writes = _counting_sends(monkeypatch)

    with pytest.raises(PermanentProviderError):
        send_one(adapter, _message(recipient="bounce.someone@example.co.id"))
    with pytest.raises(ThrottledProviderError):
        send_one(adapter, _message(recipient="throttle@example.co.id"))
    send_one(adapter, _message())

    assert len(mail_sink.messages()) == 2
    assert sum(payload.upper().startswith(b"RSET") for payload in map(_as_bytes, writes)) == 2
    adapter.close()


def test_without_pipelining_the_client_falls_back_to_one_command_per_round_trip(mail_sink, monkeypatch):
    adapter = adapter_for_provider("smtp")
    send_one(adapter, _message())
    monkeypatch.setattr(smtplib.SMTP, "has_extn", lambda _self, name: name.lower() != "pipelining")
    writes = _counting_sends(monkeypatch)

    send_one(adapter, _message())

    assert len(writes) == 4  # MAIL, RCPT, DATA, the message
    assert len(mail_sink.messages()) == 2
    adapter.close()


def _as_bytes(payload):
    return payload.encode() if isinstance(payload, str) else payload


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: x\r\n\r\nbody\r\n",
        b".starts with a dot\r\n.\r\n..\r\nmiddle . dot\r\n",
        b"bare\nline\rends\r\n.\n.x",
        b"no final line end",
        b"",
        b"\r\n.\r\n.\r\n",
    ],
)
def test_smtp_data_is_what_smtplib_would_send(data):

    # smtplib fixes line ends only for text (bytes go as they are); we always do.
    fixed = smtplib._fix_eols(data.decode("latin-1")).encode("latin-1")  # type: ignore[attr-defined]
    expected = smtplib._quote_periods(fixed)  # type: ignore[attr-defined]
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert _smtp_data(data) == expected
