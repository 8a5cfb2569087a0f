"""Templates: loaded from the simulator's file, and Meta's management API
(list; create, approving well-formed UTILITY templates only)."""

from __future__ import annotations

import json

import pytest

from cakra.simulators.whatsapp import WhatsAppSimulator
from tests.simulators.whatsapp.cloud import TEMPLATES, WABA_ID, call, send, simulator_for, template_message


def test_templates_load_from_a_file_and_can_be_sent(tmp_path):
    path = tmp_path / "whatsapp_templates.json"
    path.write_text(json.dumps(TEMPLATES), encoding="utf-8")
    with simulator_for(templates=None, templates_file=path) as sim:
        status, _ = send(sim, template_message("+6281234567890", "a", "b", "c", language="en"))
    assert status == 200


@pytest.mark.parametrize(
    "content",
    [
        {"not": "a list"},
        [{"name": "x", "language": "id", "category": "UTILITY"}],
        [{"name": "Bad Name", "language": "id", "category": "UTILITY", "body": "x"}],
        [{"name": "x", "language": "id", "category": "PROMO", "body": "x"}],
        [{"name": "x", "language": "id", "category": "UTILITY", "body": "{{1}} {{3}}"}],
        [TEMPLATES[0], TEMPLATES[0]],
    ],
)
def test_a_malformed_templates_file_is_refused_at_start(tmp_path, content):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ValueError, match=r"template|list|twice"):
        simulator_for(templates=None, templates_file=path)


def test_the_management_api_lists_templates_with_their_status(sim):
    status, answer = call(sim, f"/v21.0/{WABA_ID}/message_templates")

    assert status == 200
    listed = {(item["name"], item["language"]): item for item in answer["data"]}
    item = listed[("etle_notice", "id")]
    assert item["status"] == "APPROVED"
    assert item["category"] == "UTILITY"
    assert item["components"] == [{"type": "BODY", "text": TEMPLATES[0]["body"]}]
    assert item["id"].isdigit()


def test_the_management_api_needs_the_token_and_the_right_waba(sim):
    assert call(sim, f"/v21.0/{WABA_ID}/message_templates", token="wrong")[0] == 401
    status, answer = call(sim, "/v21.0/1234/message_templates")
    assert status == 400
    assert answer["error"]["code"] == 100


def create(sim, name, category, body, language="id"):
    return call(
        sim,
        f"/v21.0/{WABA_ID}/message_templates",
        {"name": name, "language": language, "category": category, "components": [{"type": "BODY", "text": body}]},
    )


def test_a_well_formed_utility_template_is_approved_and_can_be_sent(sim):
    status, answer = create(sim, "etle_reminder", "UTILITY", "Pengingat {{1}}: periksa di {{2}}.")

    assert status == 200
    assert answer["status"] == "APPROVED"
    assert answer["category"] == "UTILITY"
    assert send(sim, template_message("+6281234567890", "a", "b", name="etle_reminder"))[0] == 200


@pytest.mark.parametrize(
    ("category", "body"),
    [("MARKETING", "Promo {{1}}"), ("UTILITY", "Skipped {{1}} {{3}}"), ("UTILITY", "Broken {{1}")],
)
def test_other_templates_are_rejected_and_cannot_be_sent(sim, category, body):
    status, answer = create(sim, "etle_other", category, body)

    assert status == 200
    assert answer["status"] == "REJECTED"
    status, answer = send(sim, template_message("+6281234567890", "a", name="etle_other"))
    assert status == 404
    assert answer["error"]["code"] == 132001
    listed = call(sim, f"/v21.0/{WABA_ID}/message_templates")[1]["data"]
    assert {item["status"] for item in listed if item["name"] == "etle_other"} == {"REJECTED"}


@pytest.mark.parametrize(
    "change",
    [{"category": "PROMO"}, {"name": "Has Spaces"}, {"language": 5}, {"components": []}],
)
def test_a_malformed_creation_is_invalid_parameter(sim, change):
    body = {"name": "etle_x", "language": "id", "category": "UTILITY", "components": [{"type": "BODY", "text": "x"}]}
    body.update(change)

    status, answer = call(sim, f"/v21.0/{WABA_ID}/message_templates", body)

    assert status == 400
    assert answer["error"]["code"] == 100


def test_an_existing_name_and_language_cannot_be_created_again(sim):
    status, answer = create(sim, "etle_notice", "UTILITY", "Again {{1}}")
    assert status == 400
    assert answer["error"]["code"] == 100


def test_the_simulator_builds_from_settings(settings, tmp_path):
    path = tmp_path / "whatsapp_templates.json"
    path.write_text(json.dumps(TEMPLATES), encoding="utf-8")
    options = settings.CAKRA_WHATSAPP_SIM
    settings.CAKRA_WHATSAPP_SIM = {**options, "TEMPLATES_FILE": str(path), "WEBHOOK_URL": ""}
    phone_number_id = next(iter(options["BUSINESS_NUMBERS"]))

    with WhatsAppSimulator.from_settings(http_port=0) as sim:
        status, answer = call(
            sim,
            f"/v21.0/{phone_number_id}/messages",
            template_message("+6281234567890", "a", "b", "c"),
            token=options["ACCESS_TOKEN"],
        )
    assert status == 200, answer
    assert sim.webhooks is None
