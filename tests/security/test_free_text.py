"""Free text from machines never carries a link, a phone number or hidden characters into official notices,
and the intake answer never tells a key holder whether a plate is registered."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.management import call_command

from cakra.api.csvimport import CSV_COLUMNS
from cakra.delivery.messages import email_render
from cakra.delivery.selectors import deliveries_get_for_send
from cakra.enforcement.models import Notice, Violation
from cakra.security.freetext import LOCATION_WITHHELD, FreeTextError, location_clean
from tests.api.helpers import StoreSnapshot, assert_error, get, jpeg_bytes, payload, post
from tests.factories import make_notice

BATCH_URL = "/api/v1/violations/batch"

HOSTILE_LOCATIONS = {
    "url": "Jl. Sudirman, bayar di https://etle-bayar.example/tilang",
    "bare_domain": "Jl. Sudirman, cek tilang-online.com",
    "www": "Jl. Sudirman www etle bayar",
    "punycode": "Jl. Sudirman xn--tlang-2ta com",
    "homoglyph_domain": "Jl. Sudirman, korlantas.p\u043elri.g\u043e.id",  # Cyrillic o
    "email": "Jl. Sudirman, hubungi bayar@etle.example",
    "phone": "Jl. Sudirman, hubungi 0812-3456-7890",
    "phone_spaced": "Jl. Sudirman (WA 0812 345 6789)",
    "rlo": "Jl. Sudirman \u202emoc.live",
    "zero_width": "Jl. Sudir\u200bman",
    "newline": "Jl. Sudirman\nTransfer denda ke rekening 123",
    "private_use": "Jl. Sudirman \ue000",
    "fullwidth_digits": "Jl. Sudirman \uff10\uff18\uff11\uff12",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_LOCATIONS))
def test_hostile_location_is_refused_with_422_naming_the_field_and_nothing_is_stored(client, api_key, vehicle, name):
    _, token = api_key
    store = StoreSnapshot()

    response = post(client, token, payload(location=HOSTILE_LOCATIONS[name]))

    error = assert_error(response, 422, code="validation_error", field="location")
    assert HOSTILE_LOCATIONS[name] not in response.content.decode()  # the input is never echoed
    assert error["fields"][0]["code"].startswith("text_")
    store.assert_unchanged()


@pytest.mark.parametrize(("field", "value"), [("capture_id", "pay.etle-tilang.com"), ("camera_id", "www.evil.id")])
def test_identifiers_shaped_like_domains_are_refused(client, api_key, vehicle, field, value):
    _, token = api_key
    store = StoreSnapshot()

    response = post(client, token, payload(**{field: value}))

    assert_error(response, 422, code="validation_error", field=field)
    store.assert_unchanged()


def test_a_batch_item_with_a_hostile_location_is_refused_alone(client, api_key, vehicle):
    _, token = api_key
    body = {
        "violations": [
            payload(capture_id="FT-1", location=HOSTILE_LOCATIONS["url"]),
            payload(capture_id="FT-2"),
        ]
    }

    response = client.post(
        BATCH_URL, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )

    refused, stored = response.json()["results"]
    assert refused["status"] == 422
    assert refused["error"]["fields"][0]["field"] == "violations[0].location"
    assert stored["status"] == 201
    assert list(Violation.objects.values_list("capture_id", flat=True)) == ["FT-2"]


def test_a_csv_row_with_a_hostile_location_is_rejected_and_nothing_stored(tmp_path, api_key, vehicle):
    key, _ = api_key
    (tmp_path / "v.jpg").write_bytes(jpeg_bytes(size=(64, 48)))
    good = payload(capture_id="CSV-OK")
    rows = [
        {**{name: good.get(name, "") for name in CSV_COLUMNS}, "capture_id": capture_id, "location": location}
        for capture_id, location in (("CSV-BAD", HOSTILE_LOCATIONS["rlo"]), ("CSV-PHONE", HOSTILE_LOCATIONS["phone"]))
    ]
    for values in rows:
        values.update(latitude="", longitude="", evidence="v.jpg")
    path = tmp_path / "captures.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    store = StoreSnapshot()

    out = io.StringIO()
    call_command("import", "violations", str(path), "--api-key-prefix", key.prefix, stdout=out, stderr=io.StringIO())

    assert "rejected: 2" in out.getvalue()
    assert "location:" in out.getvalue()
    store.assert_unchanged()


def test_place_names_as_written_in_indonesia_are_accepted():
    for place in (
        "Jl. M.H. Thamrin, Jakarta Pusat",
        "Jl. Dago (Ir. H. Juanda), Bandung",
        "Jl. Raya Bogor Km. 21/3 arah Depok",
        "Simpang Lima: Jl. Pahlawan & Jl. Pandanaran",
        "Jl. Cut Nyak Dhien, Banda Aceh",
        "Bundaran Café René",
    ):
        assert location_clean(value=place) == place
    with pytest.raises(FreeTextError):
        location_clean(value="Jl.Sudirman")  # a dot before a word is a host name's shape


# --- What a notice shows ---------------------------------------------------------

_LINK = re.compile(r"https?://|www\.|[^\W_]\.[^\W\d_]{2}[\w.-]*/|@", re.IGNORECASE)


@pytest.mark.parametrize("location", [HOSTILE_LOCATIONS["url"], HOSTILE_LOCATIONS["phone"], HOSTILE_LOCATIONS["rlo"]])
def test_a_stored_hostile_location_never_reaches_the_email(pre_validated_key, region, vehicle, settings, location):
    """A row that bypassed the intake rules (an older version, a direct write) is checked again when rendered."""
    key, _ = pre_validated_key
    # Straight to the intake service: the API schema, which refuses such a location, is not in the way.
    notice = make_notice(vehicle=vehicle, api_key=key, location=location)
    [delivery] = deliveries_get_for_send(delivery_ids=[notice.deliveries.get(channel="email").pk])

    rendered = email_render(notice=delivery.notice)

    portal = f"{settings.CAKRA_PORTAL_BASE_URL}/cek/?n={notice.number}"
    assert re.findall(r"href=\"([^\"]*)\"", rendered.html) == [portal]
    assert re.findall(r"https?://\S+", rendered.text) == [portal]
    for part in (rendered.text, rendered.html, rendered.subject):
        assert location not in part
        assert "0812" not in part
        assert "\u202e" not in part
    assert f"Tempat            : {LOCATION_WITHHELD}\n" in rendered.text


def test_the_email_of_a_normal_notice_has_exactly_one_link(pre_validated_key, region, vehicle, settings):
    key, _ = pre_validated_key
    notice = make_notice(vehicle=vehicle, api_key=key, location="Jl. M.H. Thamrin, Jakarta")
    [delivery] = deliveries_get_for_send(delivery_ids=[notice.deliveries.get(channel="email").pk])

    rendered = email_render(notice=delivery.notice)

    assert rendered.html.count("<a ") == 1
    assert "Jl. M.H. Thamrin, Jakarta" in rendered.text
    portal = f"{settings.CAKRA_PORTAL_BASE_URL}/cek/?n={notice.number}"
    assert re.findall(r"https?://\S+", rendered.text) == [portal]
    # Nothing else a mail client would turn into a link: no other address, host name or e-mail address.
    others = [match for match in _LINK.findall(rendered.text.replace(portal, "")) if match]
    assert others == [], others


# --- No registry oracle through the intake answer -------------------------------------


def _comparable(answer: dict[str, object], *, plate: str) -> str:
    """The answer without what legitimately differs per capture: ids, times and the values sent."""
    text = json.dumps(answer, sort_keys=True)
    for value in re.findall(r'"(?:id|received_at|capture_id)": "([^"]+)"', text):
        text = text.replace(value, "<varies>")
    return text.replace(plate, "<plate>")


def _batch(client, token, item):
    return client.post(
        BATCH_URL,
        data=json.dumps({"violations": [item]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_registered_and_unregistered_plates_get_the_same_answers(client, pre_validated_key, vehicle):
    _, token = pre_validated_key
    registered, unregistered = "B 1234 XYZ", "B 9 ZZ"

    single = [
        post(client, token, payload(capture_id="ORACLE-1", plate=registered)),
        post(client, token, payload(capture_id="ORACLE-2", plate=unregistered)),
    ]
    statuses = [get(client, token, f"violations/{response.json()['id']}") for response in single]
    batches = [
        _batch(client, token, payload(capture_id="ORACLE-3", plate=registered)),
        _batch(client, token, payload(capture_id="ORACLE-4", plate=unregistered)),
    ]

    # The pre-validated key did issue a notice for the registered plate only...
    ids = [response.json()["id"] for response in single] + [
        response.json()["results"][0]["violation"]["id"] for response in batches
    ]
    assert [Notice.objects.filter(violation_id=violation_id).exists() for violation_id in ids] == [
        True,
        False,
        True,
        False,
    ]
    # ...and the answers differ in nothing but ids, times and what the client itself sent.
    for registered_answer, unregistered_answer in (single, statuses, batches):
        assert registered_answer.status_code == unregistered_answer.status_code
        assert _comparable(registered_answer.json(), plate=registered) == _comparable(
            unregistered_answer.json(), plate=unregistered
        )


def test_a_stored_hostile_location_is_withheld_on_the_portal(client, pre_validated_key, region, vehicle):
    key, _ = pre_validated_key
    location = HOSTILE_LOCATIONS["url"]
    notice = make_notice(vehicle=vehicle, api_key=key, location=location)

    answer = client.post("/cek/", {"number": notice.number, "plate": vehicle.plate})
    assert answer.status_code == 303
    page = client.get(answer["Location"]).content.decode()

    assert notice.number[:4] in page
    assert "etle-bayar" not in page
    assert "https://etle" not in page
