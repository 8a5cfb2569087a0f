"""Unicode digits in identifiers: the normal 4xx everywhere, never a 500, never a second spelling.

``"²".isdigit()`` is true and ``int("²")`` raises; ``int("٣")`` is 3 and
``uuid.UUID("٣" * 32)`` is a valid id. Every parser of numbers and ids that
come from a request accepts ASCII digits only (cakra.security.identifiers).
"""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction
from django.urls import reverse

from cakra.backoffice import services as officer_services
from cakra.backoffice.views.login import _device_pk
from cakra.enforcement.numbers import notice_number_clean, notice_number_is_valid
from cakra.security.identifiers import ascii_digits_check, ascii_int_parse, ascii_uuid_parse
from cakra.simulators.loopback import list_limit
from cakra.simulators.smtp.server import _mail_parameters_problem
from tests.api.helpers import StoreSnapshot, assert_error, get
from tests.factories import OFFICER_PASSWORD, make_violation

ASCII = "0123456789"
# Digits other scripts write, each passing str.isdigit(): superscript,
# Arabic-Indic, extended Arabic-Indic (Persian), Devanagari, fullwidth, NKo.
FOREIGN_DIGITS = {
    "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹",
    "arabic_indic": "٠١٢٣٤٥٦٧٨٩",
    "persian": "۰۱۲۳۴۵۶۷۸۹",
    "devanagari": "०१२३४५६७८९",
    "fullwidth": "".join(chr(0xFF10 + n) for n in range(10)),  # written out, ruff flags them as look-alikes
    "nko": "߀߁߂߃߄߅߆߇߈߉",
}


def respell(text: str, digits: str) -> str:
    """``text`` with its ASCII digits written in another script."""
    return text.translate(str.maketrans(ASCII, digits))


@pytest.fixture(params=sorted(FOREIGN_DIGITS))
def digits(request) -> str:
    return FOREIGN_DIGITS[request.param]


# --- the helper itself --------------------------------------------------------------------------
def test_only_ascii_digits_are_digits(digits):
    assert all(character.isdigit() for character in digits)  # what fooled the old checks
    for character in digits:
        assert not ascii_digits_check(character * 4)
        assert ascii_int_parse(character * 4) is None
    for spelling in ["", " 12", "12 ", "1_2", "-3", "+3", "12\n"]:
        assert ascii_int_parse(spelling) is None
    assert ascii_int_parse("0042") == 42


def test_only_canonical_ascii_uuids_are_ids(digits):
    canonical = "33333333-3333-4333-8333-333333333333"
    assert ascii_uuid_parse(canonical) == uuid.UUID(canonical)
    assert ascii_uuid_parse(canonical.upper()) == uuid.UUID(canonical)
    assert uuid.UUID(respell(canonical, FOREIGN_DIGITS["arabic_indic"])) == uuid.UUID(canonical)  # the old parser
    for spelling in [
        respell(canonical, digits),
        canonical.replace("-", ""),
        "{" + canonical + "}",
        "urn:uuid:" + canonical,
        canonical + "\n",
    ]:
        assert ascii_uuid_parse(spelling) is None


def test_a_notice_number_in_other_digits_is_not_a_valid_number(digits, issued):
    number = issued.notice.number
    respelled = respell(number, digits)
    assert notice_number_clean(respelled) == respelled  # kept, so that it fails below, not dropped
    assert not notice_number_is_valid(respelled)
    assert not notice_number_is_valid(digits[2] * 16)


# --- citizen portal -----------------------------------------------------------------------------
LOOKUP = "/cek/"
CHECK_DIGITS_HINT = "This is not a valid notice number."


@pytest.mark.django_db
def test_portal_lookup_answers_check_what_you_typed(client, issued, digits):
    """The real number spelled in another script, with the right plate: the typing hint, no access."""
    for typed in [respell(issued.notice.number, digits), digits[2] * 16, digits[1] * 40]:
        response = client.post(LOOKUP, {"number": typed, "plate": "B 1234 XYZ"}, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400, typed
        assert response.templates[0].name == "portal/lookup.html"
        assert response.context["form"].errors["number"]
        assert response.context["form"].has_error("number", code="check_digits")
        assert "cakra_portal_grants" not in str(dict(client.session))


@pytest.mark.django_db
def test_portal_link_prefill_and_notice_urls(client, issued, digits):
    prefilled = client.get(LOOKUP, {"n": respell(issued.notice.number, digits)})
    assert prefilled.status_code == 200
    assert prefilled.context["form"].initial == {}

    notice_id = str(issued.notice.id)
    evidence_id = str(issued.evidence[0].id)
    for path in [
        f"/notice/{respell(notice_id, digits)}/",
        f"/notice/{notice_id}/evidence/{respell(evidence_id, digits)}/",
        f"/notice/{respell(notice_id, digits)}/evidence/{evidence_id}/",
    ]:
        assert client.get(path).status_code in {302, 404}, path


# --- back office --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_backoffice_notice_url_and_page_number(officer_client, issued, digits):
    for number in [respell(issued.notice.number, digits), digits[2] * 16]:
        response = officer_client.get(reverse("backoffice:notice", kwargs={"number": number}))
        assert response.status_code == 404, number
    assert officer_client.get(reverse("backoffice:queue"), {"page": digits[3]}).status_code == 200


@pytest.mark.django_db
def test_backoffice_otp_and_enrolment_codes(client, officer, digits, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    with transaction.atomic():
        enrolment_code = officer_services.officer_enrolment_code_issue(officer=officer)
    client.post(reverse("backoffice:login"), {"username": officer.username, "password": OFFICER_PASSWORD})

    respelled = respell(enrolment_code, digits)
    # A code drawn without a digit (about one in thirty) has no other
    # spelling, and posting it here would use it up.
    if respelled != enrolment_code:
        response = client.post(reverse("backoffice:otp"), {"code": respelled})
        assert response.status_code == 400

    otp = client.post(reverse("backoffice:otp"), {"code": enrolment_code})
    assert otp.status_code == 302
    response = client.post(reverse("backoffice:otp"), {"token": digits[1:7]})
    assert response.status_code == 400
    assert response.context["form"].errors["token"]


def test_backoffice_device_reference_in_the_session(digits):
    assert _device_pk("otp_totp.totpdevice/" + digits[2]) == 0
    assert _device_pk("otp_totp.totpdevice/12") == 12


# --- API ----------------------------------------------------------------------------------------
def test_api_violation_id_in_other_digits_is_not_found(client, api_key, region, digits):
    """The id of a stored violation, spelled in other digits, is another (unknown) id."""
    _, token = api_key
    violation = make_violation(region=region, id=uuid.UUID("33333333-3333-4333-8333-333333333333"))
    assert get(client, token, f"violations/{violation.id}").status_code == 200

    assert_error(get(client, token, f"violations/{respell(str(violation.id), digits)}"), 404, code="not_found")
    assert_error(get(client, token, f"notices/{digits[2] * 16}"), 404, code="not_found")


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/api/v1/receipts/email/smtp-sink", b"[]"),
        ("/api/v1/violations/batch", b'{"violations": []}'),
        ("/api/v1/violations", b"{}"),
        (LOOKUP, b"number=1&plate=B"),
        ("/backoffice/login/", b"username=a&password=b"),
    ],
)
def test_a_content_length_in_other_digits_is_a_400(client, api_key, digits, path, data):
    """Django's request.body reads the header with int(): "²" raised (a 500), "٣" read as 3."""
    _, token = api_key
    content_type = "application/json" if path.startswith("/api/") else "application/x-www-form-urlencoded"
    store = StoreSnapshot()
    response = client.post(
        path, data=data, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}", CONTENT_LENGTH=digits[2]
    )
    assert response.status_code == 400
    store.assert_unchanged()


# --- development SMTP/HTTP sink -----------------------------------------------------------------
def test_sink_numbers_in_other_digits(digits):
    assert list_limit(f"limit={digits[5]}", default=200, maximum=10_000) is None
    assert list_limit("limit=5", default=200, maximum=10_000) == 5
    assert _mail_parameters_problem({"SIZE": digits[2]}).startswith(b"501")
    assert _mail_parameters_problem({"SIZE": "2"}) == b""
