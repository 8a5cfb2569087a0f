"""Messages for the sink tests, signed by dkimpy as any sender's signer would,
and the two ways in: SMTP to submit, HTTP to read the pages."""

from __future__ import annotations

import http.client
import smtplib
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import dkim

SELECTOR = "test1"
DOMAIN = "korlantas.polri.go.id"


def raw_message(subject="Surat Konfirmasi ETLE", body="Isi surat.\n", to="pemilik@example.co.id"):
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = f"ETLE <etle@{DOMAIN}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<t1@{DOMAIN}>"
    message.set_content(body)
    return message.as_bytes()


def dkim_signed(pem, raw, selector=SELECTOR):
    signature = dkim.sign(raw, selector.encode(), DOMAIN.encode(), pem.encode(), canonicalize=(b"relaxed", b"relaxed"))
    return signature + raw


def smtp_submit(sink, data, to="pemilik@example.co.id"):
    with smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=5) as client:
        client.sendmail(f"etle@{DOMAIN}", [to], data)


def http_get(sink, path, host=None):
    connection = http.client.HTTPConnection("127.0.0.1", sink.http_port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
