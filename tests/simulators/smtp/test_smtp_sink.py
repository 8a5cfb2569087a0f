"""The sink as a whole: loopback only, its ports freed at stop, and ``cakra sink`` running until SIGTERM."""

from __future__ import annotations

import http.client
import os
import signal
import smtplib
import subprocess
import sys

import pytest

from cakra.simulators.smtp import MailSink
from tests.simulators.smtp.mail import DOMAIN, SELECTOR, dkim_signed, raw_message


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
            client.sendmail(f"etle@{DOMAIN}", ["pemilik@example.co.id"], dkim_signed(dkim_pem, raw_message()))
        assert "messages.json" in web_line
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "SMTP sink stopped." in out
    assert len(list((tmp_path / "cmd-mail" / "new").iterdir())) == 1
