"""The sink's store: every accepted message kept byte for byte, as Maildir files written whole."""

from __future__ import annotations

import mailbox
import re
import smtplib

import pytest

from tests.simulators.smtp.mail import dkim_signed, raw_message, smtp_submit


def test_a_received_message_is_stored_byte_for_byte(sink, dkim_pem):
    data = dkim_signed(dkim_pem, raw_message(body="Baris satu.\n.baris dengan titik di depan\n"))

    smtp_submit(sink, data)

    [stored] = sink.messages()
    assert stored.raw == data
    assert len(list((sink.maildir_path / "new").iterdir())) == 1  # a real Maildir any mail client can open


def test_messages_are_maildir_files_written_whole(sink):
    smtp_submit(sink, raw_message())
    smtp_submit(sink, raw_message(subject="kedua"))

    names = sorted(path.name for path in (sink.maildir_path / "new").iterdir())
    assert list((sink.maildir_path / "tmp").iterdir()) == []  # renamed into new/, nothing left behind
    assert all(re.fullmatch(r"\d+\.M\d+P\d+Q\d+\..+", name) for name in names)
    assert [m.subject for m in sink.messages()] == ["kedua", "Surat Konfirmasi ETLE"]
    assert len(mailbox.Maildir(sink.maildir_path, create=False)) == 2  # any Maildir reader sees them


def test_a_message_that_cannot_be_stored_is_refused_for_now(sink):
    (sink.maildir_path / "tmp").rmdir()  # nowhere to write

    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_submit(sink, raw_message())

    assert refused.value.smtp_code == 451
