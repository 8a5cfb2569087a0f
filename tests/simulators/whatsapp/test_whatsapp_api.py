"""The simulator's Graph API answers sends as Meta does: the success shape,
each error code in Meta's envelope with Meta's HTTP status, the template
checks, the customer-service window and the limits."""

from __future__ import annotations

import json
import re
import time

import pytest

from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.whatsapp import Behaviour
from tests.simulators.whatsapp.cloud import PHONE_NUMBER_ID, call, send, template_message

CITIZEN = "+6281234567890"
PARAMETERS = ("ETLE-2025-000123", "B 1234 XYZ", "etle.korlantas.polri.go.id")
WAMID = re.compile(r"wamid\.[A-Za-z0-9+/]+={0,2}")


def assert_error(answer, status, code, http_status):
    assert status == http_status, answer
    error = answer["error"]
    assert error["code"] == code
    assert error["type"] in {"OAuthException", "GraphMethodException"}
    assert error["message"].startswith(f"(#{code})")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    assert error["fbtrace_id"]


def test_a_template_send_is_answered_with_meta_shape_and_stored(sim):
    status, answer = send(sim, template_message(CITIZEN, *PARAMETERS, reference="delivery-1"))

    assert status == 200
    assert set(answer) == {"messaging_product", "contacts", "messages"}
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": CITIZEN, "wa_id": "6281234567890"}]
    [message] = answer["messages"]
    assert WAMID.fullmatch(message["id"])
    assert message["message_status"] == "accepted"
    [stored] = sim.messages()
    assert stored["wamid"] == message["id"]
    assert stored["to"] == "6281234567890"
    assert stored["template"] == {"name": "etle_notice", "language": "id"}
    assert stored["text"] == (
        "Pemberitahuan pelanggaran ETLE-2025-000123 untuk kendaraan B 1234 XYZ. "
        "Periksa keasliannya di etle.korlantas.polri.go.id."
    )
    assert sim.received() == {"delivery-1": 1}


def test_copies_are_counted_per_reference(sim):
    for _ in range(2):
        send(sim, template_message(CITIZEN, *PARAMETERS, reference="delivery-dup"))
    send(sim, template_message(CITIZEN, *PARAMETERS, reference="delivery-once"))

    status, received = call(sim, "/_sim/received.json", token=None)
    assert status == 200
    assert received == {"delivery-dup": 2, "delivery-once": 1}


def test_wamids_are_unique(sim):
    ids = {send(sim, template_message(CITIZEN, *PARAMETERS))[1]["messages"][0]["id"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_missing_or_wrong_token_is_refused_with_190(sim, token):
    status, answer = send(sim, template_message(CITIZEN, *PARAMETERS), token=token)

    assert status == 401
    assert answer["error"]["code"] == 190
    assert answer["error"]["type"] == "OAuthException"
    assert answer["error"]["fbtrace_id"]
    assert sim.messages() == []


def test_an_unknown_phone_number_id_is_graph_unknown_object(sim):
    status, answer = call(sim, "/v21.0/999999999/messages", template_message(CITIZEN, *PARAMETERS))

    assert_error(answer, status, 100, 400)
    assert answer["error"]["error_subcode"] == 33


@pytest.mark.parametrize(
    "change",
    [
        {"messaging_product": "sms"},
        {"messaging_product": None},
        {"to": "not a number"},
        {"to": 6281234567890},
        {"recipient_type": "group"},
        {"type": "image"},
        {"biz_opaque_callback_data": "x" * 513},
    ],
)
def test_a_malformed_send_is_invalid_parameter(sim, change):
    body = template_message(CITIZEN, *PARAMETERS)
    body.update(change)
    body = {key: value for key, value in body.items() if value is not None}

    status, answer = send(sim, body)

    assert_error(answer, status, 100, 400)
    assert sim.messages() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_invalid_parameter(sim, raw):
    status, answer = send(sim, None, raw=raw)
    assert_error(answer, status, 100, 400)


def test_an_oversize_body_is_refused_before_reading_it(sim):
    status, _ = send(sim, None, raw=b"x" * (64 * 1024 + 1))
    assert status == 413


def test_an_unknown_template_or_language_is_132001(sim):
    for body in (
        template_message(CITIZEN, *PARAMETERS, name="no_such_template"),
        template_message(CITIZEN, *PARAMETERS, language="fr"),
    ):
        status, answer = send(sim, body)
        assert_error(answer, status, 132001, 404)


@pytest.mark.parametrize("parameters", [PARAMETERS[:2], (*PARAMETERS, "extra"), ()])
def test_a_parameter_count_that_does_not_match_the_template_is_132000(sim, parameters):
    status, answer = send(sim, template_message(CITIZEN, *parameters))
    assert_error(answer, status, 132000, 400)


@pytest.mark.parametrize("bad", ["two\nlines", "a\ttab", "five     spaces"])
def test_a_parameter_with_newline_tab_or_many_spaces_is_132018(sim, bad):
    status, answer = send(sim, template_message(CITIZEN, bad, *PARAMETERS[1:]))
    assert_error(answer, status, 132018, 400)


def test_four_spaces_in_a_parameter_are_allowed(sim):
    status, _ = send(sim, template_message(CITIZEN, "four    spaces", *PARAMETERS[1:]))
    assert status == 200


def text_message(to, body="Terima kasih, pesan Anda kami terima."):
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body, "preview_url": False},
    }


def test_a_text_is_refused_outside_the_24_hour_window_and_accepted_inside_it(sim, clock):
    status, answer = send(sim, text_message(CITIZEN))
    assert_error(answer, status, 131047, 400)

    sim.inbound(sender=CITIZEN, text="Apakah ini asli?", phone_number_id=PHONE_NUMBER_ID)
    status, answer = send(sim, text_message(CITIZEN))
    assert status == 200
    assert "message_status" not in answer["messages"][0]

    clock.advance(24 * 3600 - 1)
    assert send(sim, text_message(CITIZEN))[0] == 200
    clock.advance(1)
    status, answer = send(sim, text_message(CITIZEN))
    assert_error(answer, status, 131047, 400)


def test_the_window_belongs_to_the_citizen_who_wrote(sim):
    sim.inbound(sender=CITIZEN, text="Halo", phone_number_id=PHONE_NUMBER_ID)
    status, answer = send(sim, text_message("+6281234567891"))
    assert_error(answer, status, 131047, 400)


def test_a_burst_above_the_number_throughput_is_130429(sim_factory, clock):
    sim = sim_factory(behaviour=Behaviour(rate_per_second=10))
    answers = [send(sim, template_message(f"+62812345678{n:02d}", *PARAMETERS)) for n in range(12)]

    assert [status for status, _ in answers[:10]] == [200] * 10
    for status, answer in answers[10:]:
        assert_error(answer, status, 130429, 400)
    clock.advance(0.1)  # one message's worth of allowance comes back
    assert send(sim, template_message(CITIZEN, *PARAMETERS))[0] == 200
    assert send(sim, template_message(CITIZEN, *PARAMETERS))[0] == 400


def test_the_pair_rate_is_131056_for_one_recipient_only(sim_factory, clock):
    sim = sim_factory(behaviour=Behaviour(pair_interval=6))
    assert send(sim, template_message(CITIZEN, *PARAMETERS))[0] == 200

    status, answer = send(sim, template_message(CITIZEN, *PARAMETERS))
    assert_error(answer, status, 131056, 400)
    assert send(sim, template_message("+6281234567891", *PARAMETERS))[0] == 200
    clock.advance(6)
    assert send(sim, template_message(CITIZEN, *PARAMETERS))[0] == 200


@pytest.mark.parametrize(
    ("behaviour", "code", "http_status"),
    [(Magic.TEMPORARY, 131000, 500), (Magic.PERMANENT, 131026, 400), (Magic.THROTTLED, 130429, 400)],
)
def test_magic_numbers_are_refused_at_once(sim, behaviour, code, http_status):
    status, answer = send(sim, template_message(magic_number(behaviour, 7), *PARAMETERS, reference="d"))

    assert_error(answer, status, code, http_status)
    assert sim.received() == {}


def test_the_failure_mix_is_seeded_and_answers_131000(sim_factory):
    outcomes = []
    for _ in range(2):
        sim = sim_factory(behaviour=Behaviour(failure_rate=0.3, seed=42))
        outcomes.append([send(sim, template_message(CITIZEN, *PARAMETERS))[0] for _ in range(30)])

    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 500}


def test_latency_is_added_to_each_send(sim_factory):
    sim = sim_factory(behaviour=Behaviour(latency=0.05))
    started = time.monotonic()
    send(sim, template_message(CITIZEN, *PARAMETERS))
    assert time.monotonic() - started >= 0.05


def test_an_unknown_graph_path_is_unknown_path_components(sim):
    status, answer = call(sim, f"/v21.0/{PHONE_NUMBER_ID}/media", {"x": 1})
    assert status == 400
    assert answer["error"]["code"] == 2500


def test_a_request_under_another_host_name_is_refused(sim):
    status, _ = send(sim, template_message(CITIZEN, *PARAMETERS), headers={"Host": "attacker.example"})
    assert status == 421
    assert sim.messages() == []


def test_messages_json_lists_the_newest_first(sim):
    for n in range(3):
        send(sim, template_message(CITIZEN, f"ETLE-{n}", *PARAMETERS[1:]))

    status, listed = call(sim, "/messages.json?limit=2", token=None)

    assert status == 200
    assert [json.dumps(item["text"]).count("ETLE-2") for item in listed] == [1, 0]
    assert len(listed) == 2
