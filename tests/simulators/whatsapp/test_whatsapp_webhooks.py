"""The simulator's webhooks: statuses and inbound messages in Meta's
envelope, signed with the app secret, batched, and redelivered when the
endpoint does not answer 2xx."""

from __future__ import annotations

import pytest

from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.whatsapp import Behaviour, WhatsAppSimulator
from tests.simulators.whatsapp.cloud import (
    APP_SECRET,
    DISPLAY_NUMBER,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    WABA_ID,
    Receiver,
    call,
    send,
    simulator_for,
    template_message,
)

CITIZEN = "+6281234567890"
PARAMETERS = ("ETLE-1", "B 1 XYZ", "etle.korlantas.polri.go.id")


def statuses_of(receiver, wamid):
    return [status for status in receiver.statuses_received() if status["id"] == wamid]


def test_an_accepted_message_is_reported_sent_delivered_read_signed_in_meta_envelope(sim, receiver):
    wamid = send(sim, template_message(CITIZEN, *PARAMETERS, reference="delivery-9"))[1]["messages"][0]["id"]

    receiver.wait_for(lambda r: len(statuses_of(r, wamid)) == 3)

    assert all(post["signed"] for post in receiver.posts)
    body = receiver.accepted()[0]["body"]
    assert body["object"] == "whatsapp_business_account"
    [entry] = body["entry"]
    assert entry["id"] == WABA_ID
    [change] = entry["changes"]
    assert change["field"] == "messages"
    assert change["value"]["messaging_product"] == "whatsapp"
    assert change["value"]["metadata"] == {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID}
    sent, delivered, read = statuses_of(receiver, wamid)
    assert [sent["status"], delivered["status"], read["status"]] == ["sent", "delivered", "read"]
    for status in (sent, delivered, read):
        assert status["recipient_id"] == "6281234567890"
        assert status["biz_opaque_callback_data"] == "delivery-9"
        assert isinstance(status["timestamp"], str)
        assert status["timestamp"].isdigit()
    assert sent["conversation"]["origin"] == {"type": "utility"}
    assert sent["conversation"]["expiration_timestamp"].isdigit()
    assert sent["pricing"] == {"billable": True, "pricing_model": "CBP", "category": "utility"}
    assert "conversation" not in read
    assert [item["status"] for item in sim.messages()[0]["statuses"]] == ["sent", "delivered", "read"]


def test_statuses_are_batched_into_few_posts(sim_factory, receiver):
    sim = sim_factory(webhook_batch_delay=0.1)
    for n in range(10):
        send(sim, template_message(f"+628123456780{n}", *PARAMETERS))

    receiver.wait_for(lambda r: len(r.statuses_received()) == 30)

    assert len(receiver.posts) <= 3


@pytest.mark.parametrize("behaviour", [Magic.NOT_ON_WHATSAPP, Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE])
def test_a_number_not_on_whatsapp_is_accepted_then_reported_failed_131026(sim, receiver, behaviour):
    status, answer = send(sim, template_message(magic_number(behaviour, 3), *PARAMETERS))
    assert status == 200
    wamid = answer["messages"][0]["id"]

    receiver.wait_for(lambda r: statuses_of(r, wamid))
    sim.wait_webhooks_idle()

    [failed] = statuses_of(receiver, wamid)
    assert failed["status"] == "failed"
    [error] = failed["errors"]
    assert error["code"] == 131026
    assert error["title"] == "Message undeliverable"
    assert sim.messages()[0]["errors"][0]["code"] == 131026


def test_a_no_receipt_number_is_only_ever_sent(sim, receiver):
    wamid = send(sim, template_message(magic_number(Magic.NO_RECEIPT, 1), *PARAMETERS))[1]["messages"][0]["id"]

    receiver.wait_for(lambda r: statuses_of(r, wamid))
    assert sim.wait_webhooks_idle()

    assert [status["status"] for status in statuses_of(receiver, wamid)] == ["sent"]


def test_a_post_answered_503_is_delivered_again_byte_for_byte():
    receiver = Receiver(statuses=[503])
    try:
        with simulator_for(receiver) as sim:
            send(sim, template_message(CITIZEN, *PARAMETERS))
            receiver.wait_for(lambda r: len(r.statuses_received()) == 3)
            assert sim.wait_webhooks_idle()
            counts = sim.webhook_counts()
        first, second = receiver.posts[0], receiver.posts[1]
        assert (first["status"], second["status"]) == (503, 200)
        assert first["raw"] == second["raw"]
        assert second["signed"]
        assert counts["redelivered"] == 1
        assert counts["retries"] == 1
    finally:
        receiver.close()


def test_a_post_never_accepted_is_dropped_after_the_last_try():
    receiver = Receiver(statuses=[500, 500, 500])
    try:
        with simulator_for(receiver, webhook_max_tries=2) as sim:
            send(sim, template_message(magic_number(Magic.NO_RECEIPT, 2), *PARAMETERS))
            assert sim.wait_webhooks_idle()
            assert sim.webhook_counts()["dropped"] == 1
        assert len(receiver.posts) == 2
    finally:
        receiver.close()


def test_delivered_may_be_skipped_and_statuses_may_come_out_of_order(sim_factory, receiver):
    skipping = sim_factory(behaviour=Behaviour(skip_delivered_rate=1.0))
    wamid = send(skipping, template_message(CITIZEN, *PARAMETERS))[1]["messages"][0]["id"]
    receiver.wait_for(lambda r: len(statuses_of(r, wamid)) == 2)
    assert [s["status"] for s in statuses_of(receiver, wamid)] == ["sent", "read"]

    shuffled = sim_factory(behaviour=Behaviour(out_of_order_rate=1.0))
    wamid = send(shuffled, template_message(CITIZEN, *PARAMETERS))[1]["messages"][0]["id"]
    receiver.wait_for(lambda r: len(statuses_of(r, wamid)) == 3)
    assert [s["status"] for s in statuses_of(receiver, wamid)] == ["read", "delivered", "sent"]


def test_an_inbound_message_is_posted_in_meta_shape(sim, receiver):
    status, answer = call(
        sim,
        "/_sim/inbound",
        {"from": "6281234567890", "text": "Apakah pesan ini asli?", "phone_number_id": PHONE_NUMBER_ID, "name": "Budi"},
        token=None,
    )
    assert status == 200

    receiver.wait_for(lambda r: r.accepted())
    [change] = receiver.accepted()[0]["body"]["entry"][0]["changes"]
    value = change["value"]
    assert value["metadata"]["phone_number_id"] == PHONE_NUMBER_ID
    assert value["contacts"] == [{"profile": {"name": "Budi"}, "wa_id": "6281234567890"}]
    [message] = value["messages"]
    assert message["id"] == answer["id"]
    assert message["id"].startswith("wamid.")
    assert message["from"] == "6281234567890"
    assert message["type"] == "text"
    assert message["text"] == {"body": "Apakah pesan ini asli?"}
    assert message["timestamp"].isdigit()
    assert "context" not in message


def test_a_forwarded_inbound_message_says_so(sim, receiver):
    sim.inbound(sender=CITIZEN, text="Surat Tilang.apk", phone_number_id=PHONE_NUMBER_ID, forwarded=True)
    receiver.wait_for(lambda r: r.accepted())
    [message] = receiver.accepted()[0]["body"]["entry"][0]["changes"][0]["value"]["messages"]
    assert message["context"] == {"forwarded": True}


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"from": "6281234567890", "text": "x", "phone_number_id": "1"}, 404),
        ({"from": "abc", "text": "x", "phone_number_id": PHONE_NUMBER_ID}, 400),
        ({"from": "6281234567890", "text": "", "phone_number_id": PHONE_NUMBER_ID}, 400),
        ({"from": "6281234567890", "phone_number_id": PHONE_NUMBER_ID}, 400),
    ],
)
def test_a_bad_inbound_request_is_refused_and_nothing_posted(sim, receiver, payload, status):
    assert call(sim, "/_sim/inbound", payload, token=None)[0] == status
    assert sim.wait_webhooks_idle()
    assert receiver.posts == []


def test_the_inbound_endpoint_takes_json_only(sim):
    status, _ = call(sim, "/_sim/inbound", raw=b"from=1&text=x", token=None, headers={"Content-Type": "text/plain"})
    assert status == 415


def test_the_verification_handshake_echoes_the_challenge(sim):
    assert sim.verify_webhook(VERIFY_TOKEN)
    assert not sim.verify_webhook("wrong-token")


def test_webhooks_go_to_loopback_urls_only():
    with pytest.raises(ValueError, match="loopback"):
        WhatsAppSimulator(
            access_token="t",
            app_secret=APP_SECRET,
            waba_id=WABA_ID,
            business_numbers={PHONE_NUMBER_ID: {"display_phone_number": "1", "verified_name": "x"}},
            webhook_url="http://cakra.example.com/api/v1/webhooks/whatsapp/x",
        )


def test_reset_forgets_messages_windows_and_counts(sim):
    send(sim, template_message(CITIZEN, *PARAMETERS, reference="r"))
    sim.inbound(sender=CITIZEN, text="Halo", phone_number_id=PHONE_NUMBER_ID)

    assert call(sim, "/_sim/reset", {}, token=None)[0] == 200

    assert sim.received() == {}
    assert sim.messages() == []
    text = {"messaging_product": "whatsapp", "to": CITIZEN, "type": "text", "text": {"body": "x"}}
    assert send(sim, text)[1]["error"]["code"] == 131047
