"""Checking a notice by number + plate: grants, identical failures, rate limits."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from cakra.enforcement.numbers import notice_number_display, notice_number_generate
from cakra.portal.access import GRANTS_KEY
from tests.portal.conftest import portal_session, strip_csrf

LOOKUP = "/cek/"

pytestmark = pytest.mark.django_db


def lookup(client, number, plate, **extra):
    return client.post(LOOKUP, {"number": number, "plate": plate}, **extra)


def test_right_pair_redirects_with_303_to_the_notice_page(client, issued):
    response = lookup(client, issued.notice.number, "B 1234 XYZ")
    assert response.status_code == 303
    assert response["Location"] == f"/notice/{issued.notice.id}/"
    # Nothing typed travels in the URL: only the internal id.
    assert issued.notice.number not in response["Location"]
    assert "1234" not in response["Location"].replace(str(issued.notice.id), "")


def test_number_and_plate_are_normalised(client, issued):
    """Spaces, dashes and lower case as people type them from a letter."""
    typed_number = notice_number_display(issued.notice.number).replace(" ", "-")
    response = lookup(client, f"  {typed_number} ", "b1234xyz")
    assert response.status_code == 303


def test_wrong_plate_and_unknown_number_give_byte_identical_answers(client, issued):
    wrong_plate = lookup(client, issued.notice.number, "B 1234 XYA")
    unknown = notice_number_generate()
    unknown_number = lookup(client, unknown, "B 1234 XYZ")
    assert wrong_plate.status_code == unknown_number.status_code == 404
    assert [t.name for t in wrong_plate.templates] == [t.name for t in unknown_number.templates]
    assert strip_csrf(wrong_plate.content) == strip_csrf(unknown_number.content)
    # The typed values are not echoed back (they would tell the two apart).
    assert issued.notice.number.encode() not in wrong_plate.content
    assert unknown.encode() not in unknown_number.content
    assert "Tidak ada surat konfirmasi dengan nomor dan nomor polisi ini." in wrong_plate.content.decode()
    assert GRANTS_KEY not in portal_session(client)


def test_malformed_plate_is_just_no_match(client, issued):
    wrong_plate = lookup(client, issued.notice.number, "B 1234 XYA")
    malformed = lookup(client, issued.notice.number, "<img src=x>")
    assert malformed.status_code == 404
    assert strip_csrf(malformed.content) == strip_csrf(wrong_plate.content)
    assert b"<img src=x>" not in malformed.content


def test_overlong_input_is_a_clear_400(client, issued):
    response = lookup(client, issued.notice.number, "B 1234 XYZ" * 10)
    assert response.status_code == 400
    assert GRANTS_KEY not in portal_session(client)


def test_bad_check_digits_get_a_hint_and_count_against_the_client(client, issued, long_windows):
    number = issued.notice.number
    typo = number[:-1] + str((int(number[-1]) + 1) % 10)
    response = lookup(client, typo, "B 1234 XYZ")
    assert response.status_code == 400
    assert "Periksa kembali 16 angka" in response.content.decode()
    for _ in range(9):
        lookup(client, typo, "B 1234 XYZ")
    # Ten tries used up: even the right pair is now refused for this client.
    assert lookup(client, number, "B 1234 XYZ").status_code == 429


def test_empty_fields_are_a_clear_400_and_grant_nothing(client, issued):
    response = lookup(client, "", "")
    assert response.status_code == 400
    assert "Ketik nomor surat konfirmasi" in response.content.decode()
    assert GRANTS_KEY not in portal_session(client)


def test_client_rate_limit_answers_429_after_the_limit(client, issued, long_windows):
    burst, _ = long_windows["client_burst"]
    assert burst == 10  # the configured default: ten lookups a minute per client
    for _ in range(burst):
        assert lookup(client, notice_number_generate(), "B 1234 XYZ").status_code == 404
    limited = lookup(client, issued.notice.number, "B 1234 XYZ")
    assert limited.status_code == 429
    assert limited["Retry-After"] == "60"
    assert "Terlalu banyak percobaan" in limited.content.decode()
    assert GRANTS_KEY not in portal_session(client)
    # Another client is not affected.
    assert lookup(client, issued.notice.number, "B 1234 XYZ", REMOTE_ADDR="192.0.2.7").status_code == 303


def test_client_daily_limit(client, issued, settings):
    settings.CAKRA_PORTAL_RATE_LIMITS = {
        "client_burst": (1000, 10**7),
        "client_daily": (3, 10**7),
        "number_failures": (1000, 10**7),
    }
    for _ in range(3):
        lookup(client, notice_number_generate(), "B 1234 XYZ")
    assert lookup(client, issued.notice.number, "B 1234 XYZ").status_code == 429


def _distributed_failures(client, number, count):
    """Failed tries from many addresses: the per-client limit never applies."""
    return [
        lookup(client, number, f"B {1000 + i} ZZZ", REMOTE_ADDR=f"198.51.100.{i + 1}").status_code for i in range(count)
    ]


def test_per_number_limit_answers_429_even_for_the_right_plate(client, issued, long_windows):
    failures, _ = long_windows["number_failures"]
    assert failures == 10
    statuses = _distributed_failures(client, issued.notice.number, failures)
    assert statuses == [404] * failures
    # The next failure trips the limit, and from then on the right plate is
    # refused too: otherwise the limit would not stop a guesser.
    assert lookup(client, issued.notice.number, "B 1 AAA", REMOTE_ADDR="203.0.113.1").status_code == 429
    right = lookup(client, issued.notice.number, "B 1234 XYZ", REMOTE_ADDR="203.0.113.2")
    assert right.status_code == 429
    assert right["Retry-After"] == "3600"
    assert GRANTS_KEY not in portal_session(client)
    # Other notices are unaffected.
    unknown = notice_number_generate()
    assert lookup(client, unknown, "B 1234 XYZ", REMOTE_ADDR="203.0.113.3").status_code == 404


def test_per_number_limit_behaves_the_same_for_unknown_numbers(client, issued, long_windows):
    """The limit is no oracle: a real number and a made-up one fail alike."""
    failures, _ = long_windows["number_failures"]
    known = _distributed_failures(client, issued.notice.number, failures + 2)
    unknown = _distributed_failures(client, notice_number_generate(), failures + 2)
    assert known == unknown == [404] * failures + [429, 429]


def test_successes_do_not_use_up_the_per_number_limit(client, issued, long_windows):
    failures, _ = long_windows["number_failures"]
    for i in range(failures + 3):
        other = Client()
        response = lookup(other, issued.notice.number, "B 1234 XYZ", REMOTE_ADDR=f"198.51.100.{i + 1}")
        assert response.status_code == 303


def test_session_key_is_cycled_on_every_grant(client, issued, other_issued):
    cookie = settings.CAKRA_PORTAL_SESSION_COOKIE_NAME
    client.get(LOOKUP)
    assert lookup(client, issued.notice.number, "B 1234 XYZ").status_code == 303
    after_first = client.cookies[cookie].value
    # A second grant is a privilege change too: a new key, and both notices stay open.
    assert lookup(client, other_issued.notice.number, "B 9876 QRS").status_code == 303
    assert client.cookies[cookie].value != after_first
    assert client.get(f"/notice/{issued.notice.id}/").status_code == 200
    assert client.get(f"/notice/{other_issued.notice.id}/").status_code == 200


def test_csrf_is_enforced_on_lookup(issued):
    browser = Client(enforce_csrf_checks=True)
    refused = browser.post(LOOKUP, {"number": issued.notice.number, "plate": "B 1234 XYZ"})
    assert refused.status_code == 403
    assert "Silakan coba lagi" in refused.content.decode()  # a page a citizen understands
    assert GRANTS_KEY not in portal_session(browser)
    page = browser.get(LOOKUP)
    token = page.context["csrf_token"]
    accepted = browser.post(
        LOOKUP, {"number": issued.notice.number, "plate": "B 1234 XYZ", "csrfmiddlewaretoken": str(token)}
    )
    assert accepted.status_code == 303


def test_prefill_from_link_keeps_digits_only(client, issued):
    number = issued.notice.number
    response = client.get(LOOKUP, {"n": f"{number[:8]}<script>alert('x')</script>{number[8:]}\"onfocus=x"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "<script>" not in body
    assert "onfocus" not in body
    assert "alert" not in body
    assert f'value="{number}"' in body


def test_prefill_is_capped_at_one_number(client):
    response = client.get(LOOKUP, {"n": "1" * 500})
    assert 'value="' + "1" * 16 + '"' in response.content.decode()
    assert "1" * 17 not in response.content.decode()


def test_lookups_never_log_the_number_or_plate(client, issued, caplog):
    with caplog.at_level(logging.INFO):
        lookup(client, issued.notice.number, "B 1234 XYZ")
        lookup(client, issued.notice.number, "B 1234 XYA")
        lookup(client, "9999", "B 1234 XYZ")
    logged = " ".join(str(record.msg) + " " + record.getMessage() for record in caplog.records)
    assert "granted" in logged
    assert "no_match" in logged
    assert issued.notice.number not in logged
    assert "1234" not in logged
    assert "9999" not in logged


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_lookup_refuses_other_methods(client, method):
    assert getattr(client, method)(LOOKUP).status_code == 405


def test_lookup_answers_link_to_home(client):
    response = client.get(reverse("portal:lookup"))
    assert response.status_code == 200
    assert b'action="/cek/"' in response.content
