"""DKIM as the sink's receiver sees it: the record its simulated DNS publishes and the verdicts."""

from __future__ import annotations

import io

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from cakra.simulators.smtp import SimulatedDkimDns, dkim_check, dkim_record_derive
from tests.simulators.smtp.mail import DOMAIN, SELECTOR, dkim_signed, raw_message, smtp_submit


def test_a_message_signed_with_the_configured_key_passes_dkim(sink, dkim_pem):
    smtp_submit(sink, dkim_signed(dkim_pem, raw_message()))

    [stored] = sink.messages()
    assert stored.dkim.passed
    assert stored.dkim.domain == DOMAIN


def test_a_message_changed_after_signing_fails_dkim(sink, dkim_pem):
    signed = dkim_signed(dkim_pem, raw_message(body="Denda Rp500.000\n"))

    smtp_submit(sink, signed.replace(b"Rp500.000", b"Rp900.000"))
    smtp_submit(sink, signed.replace(b"Subject: Surat Konfirmasi ETLE", b"Subject: Bayar ke rekening ini"))

    assert [m.dkim.passed for m in sink.messages()] == [False, False]


def test_a_message_signed_with_another_key_or_unsigned_fails_dkim(sink):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    smtp_submit(sink, dkim_signed(other_pem, raw_message()))
    smtp_submit(sink, raw_message())

    assert [m.dkim.passed for m in sink.messages()] == [False, False]


def test_the_simulated_dns_answers_only_the_configured_selector(dkim_pem):
    dns = SimulatedDkimDns(record=dkim_record_derive(dkim_pem), selector=SELECTOR)

    answer = dns(f"{SELECTOR}._domainkey.{DOMAIN}.".encode())
    assert answer is not None
    assert answer.startswith(b"v=DKIM1; k=rsa; p=")
    assert dns(f"other._domainkey.{DOMAIN}.") is None
    assert dns(f"{SELECTOR}._domainkey.") is None
    assert not dkim_check(dkim_signed(dkim_pem, raw_message(), selector="other"), dns=dns).passed


def test_the_sink_publishes_the_record_the_sender_is_told_to_publish(dkim_pem):
    out = io.StringIO()

    call_command("dkim", "dns-record", "--domain", DOMAIN, stdout=out)

    [line] = out.getvalue().splitlines()
    published = "".join(line.split('"')[1::2])  # the zone file splits the value into 255-character strings
    assert published == dkim_record_derive(dkim_pem)


def test_the_record_is_derived_from_a_key_pasted_into_one_line(dkim_pem):
    one_line = dkim_pem.strip().replace("\n", "\\n")

    assert "\n" not in one_line
    assert dkim_record_derive(one_line) == dkim_record_derive(dkim_pem)


def test_a_key_that_is_not_an_rsa_private_key_is_a_configuration_error(dkim_pem):
    elliptic = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    public_only = (
        serialization.load_pem_private_key(dkim_pem.encode(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    for bad in (elliptic, public_only, "not a key"):
        with pytest.raises(ImproperlyConfigured):
            dkim_record_derive(bad)
