"""SMPP receipts: the lenient parser over the ways carriers write them, and the recording answers."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smpplib import consts
from smpplib.client import Client

from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.delivery.smpp_listener import ReceiptListener
from cakra.delivery.smpp_receipts import (
    STAT_EVENTS,
    deliver_sm_answer,
    receipt_parse,
    reference_candidates,
    stat_normalise,
)
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc import SmscBehaviour, SmscSimulator

PROVIDER = "smpp"
STANDARD = (
    "id:1A2B3C sub:001 dlvrd:001 submit date:2611280900 done date:2611280901 stat:DELIVRD err:000 text:Surat ETLE"
)


def test_the_standard_text_is_read():
    parsed = receipt_parse(STANDARD.encode())
    assert parsed is not None

    assert parsed.references[0] == "1A2B3C"
    assert (parsed.stat, parsed.event, parsed.error, parsed.detail) == ("DELIVRD", "delivered", "000", "")
    assert parsed.done_at is not None
    assert parsed.done_at.isoformat() == "2026-11-28T09:01:00+07:00"


def test_tlvs_win_over_the_text():
    parsed = receipt_parse(STANDARD, receipted_message_id=b"ABC\x00", message_state=5)
    assert parsed is not None

    assert (parsed.references[0], parsed.stat, parsed.event) == ("ABC", "UNDELIV", "failed")


@pytest.mark.parametrize(
    ("text", "stat", "detail"),
    [
        ("ID:77 STAT:UNDELIV ERR:001", "UNDELIV", "UNDELIV err:001"),
        ("stat:rejectd id:77", "REJECTD", "REJECTD"),
        ("id:77 stat:EXPIRED err:", "EXPIRED", "EXPIRED"),
        ("id:77 submit_date:2611280900 doneDate:2611280901 stat:Delivered", "DELIVRD", ""),
        ("id: 77  stat: ENROUTE", "ENROUTE", "ENROUTE"),
        ("id:77 stat:ACCEPTD", "ACCEPTD", "ACCEPTD"),
        # The first of each key wins: a message's start quoted in text: cannot fake the state.
        ("id:77 stat:DELETED text:stat:DELIVRD?", "DELETED", "DELETED"),
    ],
)
def test_deviant_texts_are_read(text, stat, detail):
    parsed = receipt_parse(text)
    assert parsed is not None

    assert (parsed.references[0], parsed.stat, parsed.detail) == ("77", stat, detail)


@pytest.mark.parametrize("text", ["", "stat:DELIVRD", "id:77", "id:77 stat:MAYBE", "id:<script> stat:DELIVRD"])
def test_a_receipt_without_an_id_or_a_known_state_is_unreadable(text):
    assert receipt_parse(text) is None


def test_an_id_is_offered_in_its_other_spellings():
    assert reference_candidates("0001193046")[:3] == ("0001193046", "1193046", "123456")
    assert "1193046" in reference_candidates("123456")
    assert "11259375" in reference_candidates("abcdef")


_STAT_SPELLINGS = {
    "DELIVRD": ["DELIVRD", "delivrd", "Delivered", "DELIVERED"],
    "UNDELIV": ["UNDELIV", "undeliverable"],
    "REJECTD": ["REJECTD", "Rejected"],
    "EXPIRED": ["EXPIRED", "expired"],
    "DELETED": ["DELETED"],
    "ACCEPTD": ["ACCEPTD", "accepted"],
    "ENROUTE": ["ENROUTE"],
    "UNKNOWN": ["UNKNOWN"],
}


@st.composite
def deviant_receipts(draw):
    number = draw(st.integers(min_value=1, max_value=2**48))
    as_hex = draw(st.booleans())
    written_id = f"{number:X}" if as_hex else str(number)
    stat = draw(st.sampled_from(sorted(_STAT_SPELLINGS)))
    fields = {
        "id": written_id,
        "stat": draw(st.sampled_from(_STAT_SPELLINGS[stat])),
        "sub": "001",
        "dlvrd": draw(st.sampled_from(["000", "001"])),
        "submit date": "2611280900",
        "done date": draw(st.sampled_from(["2611280901", "261128090159", "garbage"])),
        "err": draw(st.from_regex(r"[0-9A-F]{0,3}", fullmatch=True)),
    }
    kept = draw(st.lists(st.sampled_from(sorted(set(fields) - {"id", "stat"})), unique=True))
    keys = ["id", "stat", *kept]
    order = draw(st.permutations(keys))
    case = draw(st.sampled_from([str.lower, str.upper, str.title]))
    separator = draw(st.sampled_from([" ", "  ", "\t", " ; "]))
    colon = draw(st.sampled_from([":", ": ", " : "]))
    text = separator.join(f"{case(key)}{colon}{fields[key]}" for key in order)
    if draw(st.booleans()):
        text += f"{separator}text:{draw(st.text(alphabet='abc XYZ.-', max_size=20))}"
    return text, written_id, number, stat


@settings(max_examples=300, deadline=None)
@given(deviant_receipts())
def test_any_order_case_and_missing_fields_still_give_the_id_and_state(example):
    text, written_id, number, stat = example

    parsed = receipt_parse(text.encode("latin-1"))

    assert parsed is not None
    assert parsed.stat == stat
    assert parsed.event == STAT_EVENTS[stat]
    assert parsed.references[0] == written_id
    assert {f"{number:X}", str(number)} & set(parsed.references)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(raw):
    parsed = receipt_parse(raw)

    assert parsed is None or parsed.stat in STAT_EVENTS


def test_stat_spellings():
    assert stat_normalise("delivered") == "DELIVRD"
    assert stat_normalise("nonsense") == ""


# --- recording ---------------------------------------------------------------------------------


def _deliver_sm(text, *, esm_class=0x04, **tlvs):
    return SimpleNamespace(esm_class=esm_class, short_message=text.encode(), message_payload=None, **tlvs)


def _sent(delivery, reference):
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENT, provider=PROVIDER, provider_reference=reference
    )


def test_a_batch_is_recorded_and_each_gets_its_answer(delivery):
    _sent(delivery, "1A2B3C")

    statuses = deliver_sm_answer(
        provider=PROVIDER,
        pdus=[
            _deliver_sm(STANDARD),  # known
            _deliver_sm(STANDARD.replace("1A2B3C", "FFFF")),  # nobody's yet
            _deliver_sm("hello, is this the police?", esm_class=0),  # a citizen's SMS, not a receipt
            _deliver_sm("gibberish", esm_class=0x04),
            _deliver_sm(STANDARD),  # a duplicate
        ],
    )

    assert statuses == [
        consts.SMPP_ESME_ROK,
        consts.SMPP_ESME_RX_T_APPN,
        consts.SMPP_ESME_ROK,
        consts.SMPP_ESME_RX_P_APPN,
        consts.SMPP_ESME_ROK,
    ]
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED
    assert list(DeliveryReceipt.objects.values_list("event_id", flat=True)) == ["dlr:1A2B3C:DELIVRD"]


def test_an_id_reported_in_decimal_finds_the_hex_reference(delivery):
    _sent(delivery, "123456")

    [status] = deliver_sm_answer(provider=PROVIDER, pdus=[_deliver_sm("id:1193046 stat:UNDELIV err:0A1")])

    assert status == consts.SMPP_ESME_ROK
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED_PERMANENT
    assert DeliveryReceipt.objects.get().detail == "UNDELIV err:0A1"


# --- the listener (cakra smpp-receipts) --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_listener_records_receipts_sent_while_no_worker_is_bound(delivery):
    behaviour = SmscBehaviour(system_id="cakra", password="pw-12345", receipt_delay=0.0)
    with SmscSimulator(behaviour=behaviour, http_port=None, receipt_retry_base=0.05) as smsc:
        options = {"HOST": "127.0.0.1", "PORT": smsc.smpp_port, "SYSTEM_ID": "cakra", "PASSWORD": "pw-12345"}
        # A transmitter-only client sends (no receipts come to it), then leaves.
        sender = Client("127.0.0.1", smsc.smpp_port, timeout=2, allow_unknown_opt_params=True)
        sender.connect()
        sender.bind_transmitter(system_id="cakra", password="pw-12345")
        sender.send_message(
            source_addr_ton=5,
            source_addr="ETLE-PMJ",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=magic_number(Magic.DELIVERED).removeprefix("+"),
            short_message=b"Surat",
            registered_delivery=1,
        )
        message_id = sender.read_pdu().message_id.decode()
        sender.disconnect()
        _sent(delivery, message_id)

        listener = ReceiptListener(provider=PROVIDER, options=options, backoff_first=0.05)
        listener.start()
        try:
            deadline = time.monotonic() + 3
            while Delivery.objects.get(pk=delivery.pk).status != Delivery.Status.DELIVERED:
                assert time.monotonic() < deadline, "the receipt was not recorded"
                time.sleep(0.02)
            # The SMSC drops the session: the listener binds again.
            for connection in list(smsc.server._connections):
                connection.close()
            deadline = time.monotonic() + 3
            while listener.binds < 2:
                assert time.monotonic() < deadline, "the listener did not bind again"
                time.sleep(0.02)
        finally:
            listener.stop()
    assert smsc.dispatcher.counts["acknowledged"] == 1
