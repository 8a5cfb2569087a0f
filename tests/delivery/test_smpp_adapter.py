"""The SMPP adapter against the real SMSC simulator: sessions, windows, errors, receipts on its session."""

from __future__ import annotations

import logging
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from smpplib import consts

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.smpp import SmppSmsAdapter, smpp_status_error, sms_encode
from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc import SmscBehaviour, SmscSimulator
from cakra.simulators.smsc.store import gsm_decode, text_decode, udh_split

SYSTEM_ID, PASSWORD = "cakra", "pw-12345"
PROVIDER = "smpp"
SENDER = SenderIdentity(address="ETLE-PMJ")


def _simulator(**behaviour):
    return SmscSimulator(
        behaviour=SmscBehaviour(system_id=SYSTEM_ID, password=PASSWORD, **behaviour),
        http_port=None,
        receipt_retry_base=0.05,
        receipt_response_timeout=1.0,
    )


@pytest.fixture
def smsc():
    with _simulator(receipt_delay=0.0) as running:
        yield running


def _adapter(port, **options):
    return SmppSmsAdapter(
        options={"HOST": "127.0.0.1", "PORT": port, "SYSTEM_ID": SYSTEM_ID, "PASSWORD": PASSWORD, "TIMEOUT": 2}
        | options,
        name=PROVIDER,
    )


@pytest.fixture
def adapter(smsc):
    built = _adapter(smsc.smpp_port)
    yield built
    built.close()


def _message(recipient=None, text="Surat konfirmasi ETLE.", reference="d-1"):
    return OutboundMessage(
        reference=reference, recipient=recipient or magic_number(Magic.DELIVERED), sender=SENDER, text=text
    )


def _wait(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- encoding ---------------------------------------------------------------------------


def test_a_gsm_text_of_160_characters_is_one_segment():
    encoded = sms_encode("a" * 160, reference=1)

    assert (encoded.data_coding, encoded.esm_class, len(encoded.parts)) == (0, 0, 1)


@pytest.mark.parametrize(
    ("text", "coding"),
    [("Denda Rp500.000 {lunas} € " * 12, 0), ("Ünïcødé ✓ 🚗 " * 12, 8)],
)
def test_a_long_text_splits_into_udh_parts_that_reassemble(text, coding):
    encoded = sms_encode(text, reference=300)

    assert encoded.data_coding == coding
    assert encoded.esm_class == consts.SMPP_GSMFEAT_UDHI
    bodies = []
    for number, part in enumerate(encoded.parts, start=1):
        concatenation, body = udh_split(part)
        assert concatenation is not None
        assert (concatenation.reference, concatenation.total, concatenation.number) == (
            300 % 256,
            len(encoded.parts),
            number,
        )
        assert len(part) <= 140 if coding else len(part) <= 160
        assert text_decode(body, coding)  # every part decodes on its own: nothing cut in half
        bodies.append(body)
    assert text_decode(b"".join(bodies), coding) == text


def test_gsm_escape_pairs_are_never_cut():
    encoded = sms_encode("x" + "€" * 100, reference=1)

    for part in encoded.parts:
        _, body = udh_split(part)
        assert not body.endswith(b"\x1b")
    assert gsm_decode(b"".join(udh_split(part)[1] for part in encoded.parts)) == "x" + "€" * 100


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [{"PASSWORD": "longer-than-8"}, {"SYSTEM_ID": "x" * 16}, {"WINDOW": 0}, {"ENQUIRE_LINK_SECONDS": -1}],
)
def test_options_outside_smpp_limits_are_refused(changes):
    with pytest.raises(ImproperlyConfigured) as raised:
        _adapter(2775, **changes)

    assert "longer-than-8" not in str(raised.value)


# --- sending --------------------------------------------------------------------------------


def test_a_message_is_submitted_from_the_sender_id_and_reassembled(smsc, adapter):
    long_text = "Surat konfirmasi pelanggaran lalu lintas elektronik. " * 5
    [short, long] = adapter.send_many(
        [
            _message(reference="d-1"),
            _message(text=long_text, reference="d-2", recipient=magic_number(Magic.DELIVERED, 2)),
        ]
    )

    assert (short.outcome, long.outcome) == ("sent", "sent")
    texts = {m.text: m for m in smsc.messages()}
    assert texts["Surat konfirmasi ETLE."].sender == "ETLE-PMJ"
    assert texts["Surat konfirmasi ETLE."].recipient == magic_number(Magic.DELIVERED).removeprefix("+")
    assert texts[long_text].parts > 1
    assert long.reference == texts[long_text].id  # the first part's message_id
    assert smsc.server.counts["binds"] == 1  # one session for the batch


def test_an_invalid_recipient_fails_before_any_io(smsc, adapter):
    [result] = adapter.send_many([_message(recipient="+6221555123")])  # a Jakarta landline

    assert result.outcome == "permanent"
    assert smsc.server.counts["binds"] == 0


def test_a_wrong_password_makes_the_provider_unavailable(smsc):
    adapter = _adapter(smsc.smpp_port, PASSWORD="wrong")

    [result] = adapter.send_many([_message(), _message(reference="d-2")])

    assert type(result.error).__name__ == "UnavailableProviderError"
    assert "bind refused" in result.error.detail
    assert smsc.messages() == []


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(consts.SMPP_ESME_RTHROTTLED, 1.0), (consts.SMPP_ESME_RMSGQFUL, 5.0)],
)
def test_throttling_answers_halt_the_batch(smsc, adapter, status, retry_after):
    smsc.server.force_status(status)

    results = adapter.send_many([_message(), _message(reference="d-2")])

    assert [r.outcome for r in results] == ["throttled"]
    assert results[0].error.retry_after == retry_after
    # The session survived: the next batch goes through on it.
    assert adapter.send_many([_message(reference="d-3")])[0].outcome == "sent"
    assert smsc.server.counts["binds"] == 1


def test_the_status_mapping():
    assert type(smpp_status_error(0x0B, stage="s")).__name__ == "PermanentProviderError"
    assert type(smpp_status_error(0x0A, stage="s")).__name__ == "PermanentProviderError"
    assert type(smpp_status_error(0x01, stage="s")).__name__ == "PermanentProviderError"
    assert type(smpp_status_error(0x08, stage="s")).__name__ == "RetryableProviderError"
    assert type(smpp_status_error(0x45, stage="s")).__name__ == "RetryableProviderError"


def test_a_connection_dropped_mid_window_is_unavailable_and_the_next_batch_reconnects(smsc, adapter):
    long_text = "Surat konfirmasi pelanggaran lalu lintas elektronik. " * 5  # three parts, one window
    assert adapter.send_many([_message(reference="warm")])[0].outcome == "sent"
    smsc.server.drop_after_submits(1)  # the second part's arrival closes the connection

    results = adapter.send_many([_message(text=long_text, reference="d-1"), _message(reference="d-2")])

    assert [r.outcome for r in results] == ["retryable"]
    assert type(results[0].error).__name__ == "UnavailableProviderError"
    assert adapter.send_many([_message(reference="d-3")])[0].outcome == "sent"
    assert smsc.server.counts["binds"] == 2


def test_a_session_closed_while_idle_is_replaced_before_the_next_message(smsc, adapter):
    adapter.send_many([_message(reference="d-1")])
    for connection in list(smsc.server._connections):
        connection.close()
    time.sleep(0.05)

    [result] = adapter.send_many([_message(reference="d-2")])

    assert result.outcome == "sent"
    assert smsc.server.counts["binds"] == 2


def test_an_idle_session_is_checked_with_enquire_link(smsc):
    adapter = _adapter(smsc.smpp_port, ENQUIRE_LINK_SECONDS=0.01)
    adapter.send_many([_message(reference="d-1")])
    time.sleep(0.03)

    assert adapter.send_many([_message(reference="d-2")])[0].outcome == "sent"
    assert smsc.server.counts["binds"] == 1
    adapter.close()


def test_logs_name_neither_the_number_nor_the_text(smsc, adapter, caplog):
    caplog.set_level(logging.DEBUG)
    secret_text = "Teks rahasia warga"

    adapter.send_many([_message(text=secret_text)])

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert secret_text not in logged
    assert magic_number(Magic.DELIVERED).removeprefix("+") not in logged


# --- receipts on the adapter's session ----------------------------------------------------------


def _note(message, reference):
    """The worker's note of an accepted message, as the sending service writes it."""
    Delivery.objects.filter(pk=message.reference).update(
        status=Delivery.Status.SENT, provider=PROVIDER, provider_reference=reference
    )


@pytest.mark.parametrize(
    ("recipient", "status", "event", "stat"),
    [
        (magic_number(Magic.DELIVERED), Delivery.Status.DELIVERED, "delivered", "DELIVRD"),
        (magic_number(Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE), Delivery.Status.FAILED_PERMANENT, "failed", "UNDELIV"),
    ],
)
def test_receipts_arriving_on_the_session_are_recorded(smsc, adapter, delivery, recipient, status, event, stat):
    [sent] = adapter.send_many([_message(recipient=recipient, reference=str(delivery.id))], on_accepted=_note)
    _wait(lambda: smsc.dispatcher.counts["sent"] == 1)

    adapter.send_many([_message(reference="next")])  # the session reads what came meanwhile

    delivery.refresh_from_db()
    assert delivery.status == status
    receipt = DeliveryReceipt.objects.get(delivery=delivery)
    assert (receipt.event, receipt.event_id) == (event, f"dlr:{sent.reference}:{stat}")
    if event == "failed":
        assert receipt.detail == "UNDELIV err:001"
    _wait(lambda: smsc.dispatcher.counts["acknowledged"] == 1)


def test_a_receipt_before_the_response_is_answered_retry_later_then_recorded(delivery):
    with _simulator(receipt_before_response=True) as smsc:
        adapter = _adapter(smsc.smpp_port)
        try:
            [sent] = adapter.send_many([_message(reference=str(delivery.id))], on_accepted=_note)
            assert sent.outcome == "sent"
            delivery.refresh_from_db()
            assert delivery.status == Delivery.Status.SENT  # the early receipt named an id not yet noted
            assert smsc.dispatcher.counts["sent"] == 1
            _wait(lambda: smsc.dispatcher.counts["retried"] == 1)
            _wait(lambda: smsc.dispatcher.counts["sent"] == 2)

            adapter.send_many([_message(reference="next")])

            delivery.refresh_from_db()
            assert delivery.status == Delivery.Status.DELIVERED
        finally:
            adapter.close()
