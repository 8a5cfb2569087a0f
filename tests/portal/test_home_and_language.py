"""The start page (how to recognise a genuine notice) and the language switch."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import RegionFactory

pytestmark = pytest.mark.django_db


def test_home_explains_the_portal_and_links_to_the_lookup(client, settings):
    settings.CAKRA_OFFICIAL_DOMAIN = "etle.korlantas.polri.go.id"
    response = client.get("/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "portal resmi surat konfirmasi ETLE" in body
    assert 'action="/cek/"' in body
    assert 'href="/cek/"' in body
    assert "selalu menampilkan foto kendaraan Anda" in body
    assert "APK" in body
    assert "OTP" in body
    assert "rekening bank pribadi" in body
    assert "virtual account" in body
    assert "etle.korlantas.polri.go.id" in body


def test_home_lists_every_region_with_its_senders(client, region, other_region):
    RegionFactory(code="BALI", name="Polda Bali", whatsapp_sender="", sms_sender_id="", plate_prefixes=["DK"])
    body = client.get("/").content.decode()
    for code, name in (("METRO", "Polda Metro Jaya"), ("JABAR", "Polda Jawa Barat")):
        assert name in body
        assert f"etle-{code.lower()}@korlantas.polri.go.id" in body
    assert "+62 811 1500 669" in body
    assert "POLRI-ETLE" in body
    assert "Polda Bali" in body
    assert "Tidak digunakan di wilayah ini" in body


def test_indonesian_by_default_even_for_an_english_browser(client):
    for headers in ({}, {"HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9"}):
        response = client.get("/", **headers)
        body = response.content.decode()
        assert '<html lang="id">' in body
        assert "Cara mengenali surat konfirmasi yang asli" in body
        assert 'value="en"' in body  # the switch offers English
        assert response["Content-Language"] == "id"


def test_english_switch_changes_the_language(client):
    response = client.post("/i18n/setlang/", {"language": "en", "next": "/cek/"})
    assert response.status_code == 302
    assert response["Location"] == "/cek/"
    cookie = response.cookies["django_language"]
    assert cookie.value == "en"
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    body = client.get("/cek/").content.decode()
    assert '<html lang="en">' in body
    assert "Type the notice number from your letter or message" in body
    assert 'value="id"' in body  # and back to Indonesian
    home = client.get("/").content.decode()
    assert "How to recognise a genuine notice" in home


def test_english_notice_page(client, issued):
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    response = client.post("/cek/", {"number": issued.notice.number, "plate": "B 1234 XYZ"})
    body = client.get(response["Location"]).content.decode()
    assert "Running a red light" in body
    assert "Article 287(2), UU 22/2009" in body
    assert "Rp500,000" in body
    assert "Saturday, 28 November 2026 at 08:05 WIB" in body
    assert "If they differ, the message is fake" in body
    assert "Car" in body


def test_language_switch_stays_on_this_site(client):
    response = client.post("/i18n/setlang/", {"language": "en", "next": "https://evil.example/phish"})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_language_switch_is_csrf_protected():

    response = Client(enforce_csrf_checks=True).post("/i18n/setlang/", {"language": "en", "next": "/"})
    assert response.status_code == 403


def test_switch_on_lookup_link_keeps_the_prefilled_number(client):
    body = client.get("/cek/", {"n": "1234567890123456"}).content.decode()
    assert 'name="next" value="/cek/?n=1234567890123456"' in body


def test_rate_limited_page_is_in_english_after_switching(client, settings):
    settings.CAKRA_PORTAL_RATE_LIMITS = {
        "client_burst": (1, 10**7),
        "client_daily": (100, 10**7),
        "number_failures": (10, 10**7),
    }
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    client.post("/cek/", {"number": "1", "plate": "B 1 A"})
    response = client.post("/cek/", {"number": "1", "plate": "B 1 A"})
    assert response.status_code == 429
    assert "Too many tries" in response.content.decode()
