"""The SMSC simulator speaks SMPP v3.4 as an SMSC does: binds, answers, concatenation, receipts, pages."""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.request

import pytest
from smpplib import consts, exceptions, smpp
from smpplib.gsm import make_parts

from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc import copy_key
from cakra.simulators.smsc.store import gsm_decode, udh_split

SENDER = "ETLE-PMJ"


def _submit(client, recipient, short_message, *, esm_class=0, data_coding=0, registered_delivery=1):
    client.send_message(
        source_addr_ton=consts.SMPP_TON_ALNUM,
        source_addr_npi=0,
        source_addr=SENDER,
        dest_addr_ton=consts.SMPP_TON_INTL,
        dest_addr_npi=consts.SMPP_NPI_ISDN,
        destination_addr=recipient.removeprefix("+"),
        esm_class=esm_class,
        data_coding=data_coding,
        short_message=short_message,
        registered_delivery=registered_delivery,
    )
    return client.read_pdu()


def _read_until(client, command):
    while True:
        pdu = client.read_pdu()
        if pdu.command == command:
            return pdu


def _wait(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _get(smsc, path):
    with urllib.request.urlopen(f"{smsc.http_url}{path.lstrip('/')}", timeout=2) as answer:  # noqa: S310 - loopback
        return answer.read().decode()


def test_a_wrong_password_is_refused_and_the_connection_closed(smsc, esme):
    with pytest.raises(exceptions.PDUError) as raised:
        esme(password="wrong")

    assert raised.value.args[1] == consts.SMPP_ESME_RINVPASWD
    assert smsc.server.counts["bind_refused"] == 1


def test_a_submit_before_bind_is_refused_with_the_bind_status(smsc):
    with socket.create_connection(("127.0.0.1", smsc.smpp_port), timeout=2) as raw:
        raw.sendall(struct.pack(">LLLL", 16, 0x00000004, 0, 7))  # submit_sm, empty body
        answer = raw.recv(16)

    assert struct.unpack(">LLLL", answer)[2:] == (consts.SMPP_ESME_RINVBNDSTS, 7)


def test_an_accepted_submit_gets_a_message_id_and_a_delivered_receipt_with_tlvs(smsc, esme):
    client = esme()

    answer = _submit(client, magic_number(Magic.DELIVERED, 7), b"Halo")
    receipt = _read_until(client, "deliver_sm")

    assert answer.status == consts.SMPP_ESME_ROK
    message_id = answer.message_id.decode()
    assert receipt.esm_class == 0x04
    assert receipt.receipted_message_id.rstrip(b"\x00").decode() == message_id
    assert receipt.message_state == consts.SMPP_MESSAGE_STATE_DELIVERED
    text = receipt.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
    assert "stat:DELIVRD err:000" in text
    assert smsc.messages()[0].status == "DELIVRD"


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        (Magic.TEMPORARY, consts.SMPP_ESME_RSYSERR),
        (Magic.PERMANENT, consts.SMPP_ESME_RINVDSTADR),
        (Magic.THROTTLED, consts.SMPP_ESME_RTHROTTLED),
    ],
)
def test_magic_numbers_are_refused_as_documented(smsc, esme, behaviour, status):
    answer = _submit(esme(), magic_number(behaviour), b"x")

    assert answer.status == status
    assert smsc.messages() == []


def test_the_undeliverable_number_is_accepted_then_reported_undeliv(smsc, esme):
    client = esme()

    answer = _submit(client, magic_number(Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE), b"x")
    receipt = _read_until(client, "deliver_sm")

    assert answer.status == consts.SMPP_ESME_ROK
    assert b"stat:UNDELIV err:001" in receipt.short_message
    assert receipt.message_state == consts.SMPP_MESSAGE_STATE_UNDELIVERABLE


def test_the_no_receipt_number_never_gets_one(smsc, esme):
    client = esme()

    _submit(client, magic_number(Magic.NO_RECEIPT), b"x")

    assert smsc.dispatcher.pending() == 0
    assert smsc.messages()[0].status == "no receipt"


def test_receipts_wait_for_a_receiver_to_bind(smsc, esme):
    transmitter = esme("bind_transmitter")
    _submit(transmitter, magic_number(Magic.DELIVERED), b"x")
    _wait(lambda: smsc.dispatcher.pending() == 1)

    receiver = esme("bind_receiver")

    assert _read_until(receiver, "deliver_sm").message_state == consts.SMPP_MESSAGE_STATE_DELIVERED


def test_a_receipt_answered_with_an_error_is_sent_again(smsc, esme):
    client = esme()
    _submit(client, magic_number(Magic.DELIVERED), b"x")
    first = _read_until(client, "deliver_sm")
    # Answer "temporary application error", as for an unknown reference.
    response = smpp.make_pdu("deliver_sm_resp", client=client, status=consts.SMPP_ESME_RX_T_APPN)
    response.sequence = first.sequence
    client.send_pdu(response)

    again = _read_until(client, "deliver_sm")

    assert again.short_message == first.short_message
    assert smsc.dispatcher.counts["retried"] == 1


def test_a_long_text_is_reassembled_from_its_udh_parts(smsc, esme):
    client = esme()
    text = "Surat konfirmasi pelanggaran lalu lintas. " * 6
    parts, _coding, esm_class = make_parts(text)
    assert len(parts) > 1

    ids = {
        _submit(client, magic_number(Magic.DELIVERED), part, esm_class=esm_class, registered_delivery=0).message_id
        for part in parts
    }

    [message] = smsc.messages()
    assert (message.text, message.parts, len(ids)) == (text, len(parts), len(parts))
    assert smsc.store.received() == {copy_key(magic_number(Magic.DELIVERED).removeprefix("+"), text): 1}


def test_udh_and_gsm_decoding():
    concatenation, body = udh_split(b"\x05\x00\x03\x2a\x02\x01abc")
    assert concatenation is not None

    assert (concatenation.reference, concatenation.total, concatenation.number, body) == (0x2A, 2, 1, b"abc")
    assert gsm_decode(b"\x00\x1b\x65") == "@€"


def test_forced_statuses_answer_the_next_submits(smsc, esme):
    client = esme()
    smsc.server.force_status(consts.SMPP_ESME_RMSGQFUL)

    assert _submit(client, magic_number(Magic.DELIVERED), b"x").status == consts.SMPP_ESME_RMSGQFUL
    assert _submit(client, magic_number(Magic.DELIVERED), b"x").status == consts.SMPP_ESME_ROK


def test_enquire_link_is_answered(smsc, esme):
    client = esme()
    request = smpp.make_pdu("enquire_link", client=client)
    client.send_pdu(request)

    answer = client.read_pdu()

    assert (answer.command, answer.sequence) == ("enquire_link_resp", request.sequence)


def test_the_phone_page_shows_the_sender_and_text_escaped(smsc, esme):
    recipient = magic_number(Magic.DELIVERED, 42)
    _submit(esme(), recipient, b"<script>alert(1)</script>", registered_delivery=0)

    page = _get(smsc, f"/phones/{recipient.removeprefix('+')}")
    index = _get(smsc, "/")

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert SENDER in page
    assert recipient.removeprefix("+") in index


def test_received_counts_copies_per_recipient_and_text(smsc, esme):
    client = esme()
    recipient = magic_number(Magic.DELIVERED, 5)
    for _ in range(2):
        _submit(client, recipient, b"Sama", registered_delivery=0)

    received = json.loads(_get(smsc, "/_sim/received.json"))
    listed = json.loads(_get(smsc, "/messages.json"))

    assert received == {copy_key(recipient.removeprefix("+"), "Sama"): 2}
    assert [m["text"] for m in listed] == ["Sama", "Sama"]
