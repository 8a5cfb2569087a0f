"""What the bench counts as lost and duplicated (cakra.ops.bench.measurement), from what the
SMTP sink really received (cakra.ops.bench.channels.email)."""

from __future__ import annotations

import uuid

import pytest

from cakra.delivery.channels.base import OutboundMessage
from cakra.delivery.channels.email import SmtpEmailAdapter
from cakra.ops.bench.channels import bench_channels
from cakra.ops.bench.channels.email import (
    RECIPIENT_DOMAIN,
    SENDER,
    ceiling_message,
    maildir_received,
    message_delivery_id,
)
from cakra.ops.bench.measurement import copies_beyond_first, deliveries_tally
from cakra.simulators.smtp import MailSink
from tests.delivery.helpers import send_one


def _notice_email(delivery_id: str, n: int) -> OutboundMessage:
    return OutboundMessage(
        reference=delivery_id,
        recipient=f"owner{n}@{RECIPIENT_DOMAIN}",
        sender=SENDER,
        subject="Surat konfirmasi",
        text="Kendaraan Anda tercatat melanggar lalu lintas.",
    )


def test_copies_a_recipient_received_again_are_duplicates_and_accepted_but_missing_are_lost(settings, tmp_path):
    once, thrice, twice, never = (str(uuid.uuid4()) for _ in range(4))
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
    ) as sink:
        adapter = SmtpEmailAdapter(
            options={**settings.CAKRA_EMAIL, "HOST": "127.0.0.1", "PORT": sink.smtp_port, "SECURITY": "none"}
        )
        # As after a kill: a chunk's messages sent, then sent again once the
        # sweeper took the chunk back; one of them a third time.
        for delivery_id, n in [(once, 0), (thrice, 1), (twice, 2), (thrice, 1), (twice, 2), (thrice, 1)]:
            send_one(adapter, _notice_email(delivery_id, n))
        send_one(adapter, ceiling_message(1))  # the bare client's: another domain, never counted
        adapter.close()

    received = maildir_received(tmp_path / "mail")

    assert received == {once: 1, thrice: 3, twice: 2}
    assert copies_beyond_first(received) == 3
    # The database says four deliveries were accepted, one of them never
    # arrived; one notice of five never got a final outcome.
    tally = deliveries_tally(expected=5, final=4, succeeded=[once, thrice, twice, never], received=received)
    assert (tally.duplicates, tally.duplicated) == (3, 2)
    assert (tally.unfinished, tally.unreceived, tally.lost) == (1, 1, 2)


def test_a_clean_run_counts_nothing():
    tally = deliveries_tally(expected=2, final=2, succeeded=["a", "b"], received={"a": 1, "b": 1})
    assert (tally.lost, tally.duplicates, tally.duplicated) == (0, 0, 0)


def test_the_delivery_id_is_read_back_from_the_message_id():
    delivery_id = str(uuid.uuid4())
    assert message_delivery_id(f"<{delivery_id}@bench.korlantas.example.go.id>") == delivery_id
    assert message_delivery_id("not-a-message-id") == "not-a-message-id"


def test_a_channel_enabled_without_a_bench_plug_in_is_refused(settings):
    settings.CAKRA_ENABLED_CHANNELS = ["email"]
    assert [channel.name for channel in bench_channels()] == ["email"]

    settings.CAKRA_ENABLED_CHANNELS = ["email", "carrier-pigeon"]
    with pytest.raises(RuntimeError, match="carrier-pigeon"):
        bench_channels()
