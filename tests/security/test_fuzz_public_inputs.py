"""Property-based fuzzing of every public form, URL parameter and webhook (hypothesis).

Through Django's test client, as a browser or a provider would send them:
the portal lookup and its link, the language switch, notice and evidence
URLs; the back office's sign-in, enrolment-code and one-time-code forms;
the receipts webhook, signed with the configured secret and unsigned; the
intake routes with raw bodies no JSON encoder would write (junk, huge
numbers, deep nesting, NaN, duplicate keys, wrong types everywhere).

Two properties hold for every input: never a 5xx, and a refused request
(4xx) stores nothing: no violation, evidence row or file, notice, receipt
or audit event. The one exception is by design: a sign-in attempt that
fails on a wrong password or code is audited and counts toward the sign-in throttle.

Examples are bounded and derandomised (the same inputs on every run); the
rate-limit counters are reset before each example so that the forms
themselves are exercised, not only the limiter (tested on its own).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cakra.api.schemas import ViolationIn
from cakra.audit.models import AuditEvent
from cakra.backoffice import services as officer_services
from cakra.delivery.models import DeliveryReceipt
from cakra.enforcement.models import Evidence, Notice, Violation
from cakra.security.signing import receipt_signature_header
from tests.api.helpers import evidence_files, payload
from tests.factories import OFFICER_PASSWORD
from tests.security.limits import limits_reset

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    # The database fixtures are function-scoped on purpose: the examples of
    # one test share its transaction, rolled back at the end.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as people and tools type it: any printable or control character but
# lone surrogates (which no HTTP client can encode), digits of every script.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
DIGITS_OF_ANY_SCRIPT = st.text(st.characters(categories=["Nd", "No", "Zs", "Pd"]), min_size=1, max_size=40)
FORM_TEXT = st.one_of(TEXT, DIGITS_OF_ANY_SCRIPT)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
# Bodies a JSON encoder would not produce: what a parser must refuse cleanly.
RAW_JSON_BODIES = [
    b"",
    b"{",
    b"\xff\xfe{}",
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": 1, "a": 2}',
    b'{"violations": [], "violations": []}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"1" * 5000,
    b'{"measured_speed_kmh": ' + b"9" * 5000 + b"}",
    b'{"latitude": 1e400}',
    b'{"capture_id": "\\ud800"}',
    b'"\\u0000"',
    b"null",
]
HTTP_SERVER_ERROR = 500


class Store:
    """Everything a public request could store, before and after it."""

    def __init__(self) -> None:
        self.before = self.take()

    @staticmethod
    def take() -> tuple[object, ...]:
        return (
            Violation.objects.count(),
            Evidence.objects.count(),
            Notice.objects.count(),
            DeliveryReceipt.objects.count(),
            AuditEvent.objects.count(),
            frozenset(evidence_files()),
        )

    def assert_unchanged(self, *, audited: bool = False) -> None:
        after = self.take()
        if audited:  # failed sign-ins are audited by design: compare all but the audit trail
            assert after[:4] + after[5:] == self.before[:4] + self.before[5:]
        else:
            assert after == self.before


def answer(response, store: Store, *, audited: bool = False):
    """The status, having checked the two properties."""
    assert response.status_code < HTTP_SERVER_ERROR, response.content[:300]
    if 400 <= response.status_code < HTTP_SERVER_ERROR:
        store.assert_unchanged(audited=audited)
    return response.status_code


@pytest.fixture
def fresh_limits():
    """Reset the rate-limit counters (call before each example)."""
    return limits_reset


# --- citizen portal -----------------------------------------------------------------------------
@pytest.mark.django_db
@FUZZ
@given(number=FORM_TEXT, plate=FORM_TEXT)
@example(number="²" * 16, plate="B 1234 XYZ")
@example(number="٣" * 16, plate="B 1234 XYZ")
@example(number="\x00", plate="\x00")
def test_portal_lookup_form(client, issued, fresh_limits, number, plate):
    fresh_limits()
    store = Store()
    response = client.post("/cek/", {"number": number, "plate": plate})
    assert answer(response, store) in {303, 400, 404, 429}


@pytest.mark.django_db
@FUZZ
@given(prefill=TEXT, extra=st.dictionaries(TEXT, TEXT, max_size=3))
def test_portal_lookup_link(client, prefill, extra):
    response = client.get("/cek/", {**extra, "n": prefill})
    assert answer(response, Store()) == 200
    # Only digits reach the page from the link.
    assert set(response.context["form"].initial.get("number", "")) <= set("0123456789")


@pytest.mark.django_db
@FUZZ
@given(language=TEXT, next_url=TEXT)
def test_portal_language_switch(client, language, next_url):
    store = Store()
    response = client.post(reverse("portal:set_language"), {"language": language, "next": next_url})
    answer(response, store)
    if response.status_code in {301, 302, 303}:
        # Never to another host (a relative "next" stays on this one).
        assert url_has_allowed_host_and_scheme(response["Location"], allowed_hosts={"testserver"})


@pytest.mark.django_db
@FUZZ
@given(segment=TEXT, other=TEXT)
def test_portal_notice_and_evidence_urls(client, issued, segment, other):
    notice_id = str(issued.notice.id)
    store = Store()
    for path in [
        f"/notice/{quote(segment, safe='')}/",
        f"/notice/{notice_id}/evidence/{quote(other, safe='')}/",
        f"/notice/{quote(segment, safe='')}/evidence/{quote(other, safe='')}/",
    ]:
        assert answer(client.get(path), store) in {302, 404}


# --- back office --------------------------------------------------------------------------------
@pytest.mark.django_db
@FUZZ
@given(username=FORM_TEXT, password=FORM_TEXT, next_url=TEXT)
def test_backoffice_sign_in_form(client, officer, fresh_limits, username, password, next_url):
    fresh_limits()
    store = Store()
    response = client.post(reverse("backoffice:login"), {"username": username, "password": password, "next": next_url})
    assert answer(response, store, audited=True) in {200, 302, 400}


@pytest.fixture
def pending_enrolment(officer):
    """A client past the password step of an officer's first sign-in (enrolment code next)."""
    with transaction.atomic():
        officer_services.officer_enrolment_code_issue(officer=officer)
    client = Client()
    client.post(reverse("backoffice:login"), {"username": officer.username, "password": OFFICER_PASSWORD})
    return client


@pytest.mark.django_db
@FUZZ
@given(code=FORM_TEXT)
@example(code="٣" * 12)
def test_backoffice_enrolment_code_form(pending_enrolment, officer, fresh_limits, settings, code):
    fresh_limits()
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    store = Store()
    response = pending_enrolment.post(reverse("backoffice:otp"), {"code": code})
    assert answer(response, store, audited=True) in {302, 400}


@pytest.fixture
def pending_code(officer):
    """A client past the password step of an officer with an authenticator (code next)."""
    officer_services.officer_totp_device_create(officer=officer, name="test", confirmed=True)
    client = Client()
    client.post(reverse("backoffice:login"), {"username": officer.username, "password": OFFICER_PASSWORD})
    return client


@pytest.mark.django_db
@FUZZ
@given(token=FORM_TEXT)
@example(token="١٢٣٤٥٦")
@example(token="".join(chr(0xFF11 + n) for n in range(6)))  # fullwidth 123456
def test_backoffice_one_time_code_form(pending_code, officer, fresh_limits, settings, token):
    fresh_limits()
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    store = Store()
    response = pending_code.post(reverse("backoffice:otp"), {"token": token})
    assert answer(response, store, audited=True) in {302, 400}


# --- receipts webhook ---------------------------------------------------------------------------
RECEIPTS = "/api/v1/receipts/email/smtp-sink"
RECEIPT_EVENT = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(TEXT, JSON_VALUES),
        "message_id": st.one_of(TEXT, JSON_VALUES),
        "event": st.one_of(st.sampled_from(["delivered", "opened", "bounced", "deferred"]), JSON_VALUES),
        "timestamp": st.one_of(TEXT, st.datetimes().map(lambda moment: moment.isoformat()), JSON_VALUES),
        "detail": st.one_of(TEXT, JSON_VALUES),
    },
)
RECEIPT_BODIES = st.one_of(
    st.lists(RECEIPT_EVENT, max_size=3).map(lambda events: json.dumps(events).encode()),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.sampled_from(RAW_JSON_BODIES),
    st.binary(max_size=64),
)


def _receipt_secret() -> str:
    webhook = django_settings.CAKRA_RECEIPT_WEBHOOKS["smtp-sink"]
    return str(webhook["SECRET"])


@pytest.mark.django_db
@FUZZ
@given(body=RECEIPT_BODIES)
def test_receipts_webhook_signed(client, fresh_limits, body):
    fresh_limits()
    store = Store()
    signature = receipt_signature_header(secret=_receipt_secret(), body=body)
    response = client.post(RECEIPTS, data=body, content_type="application/json", HTTP_X_CAKRA_SIGNATURE=signature)
    assert answer(response, store) in {200, 400, 404, 413, 422}


@pytest.mark.django_db
@FUZZ
@given(body=RECEIPT_BODIES, signature=st.one_of(st.none(), st.text(st.characters(max_codepoint=0x7E), max_size=80)))
def test_receipts_webhook_unsigned_or_forged(client, fresh_limits, body, signature):
    fresh_limits()
    store = Store()
    headers = {} if signature is None else {"HTTP_X_CAKRA_SIGNATURE": signature}
    response = client.post(RECEIPTS, data=body, content_type="application/json", **headers)
    assert answer(response, store) == 401


# --- intake API: raw bodies ---------------------------------------------------------------------
# Every field the schema declares, so a new field is fuzzed too.
VIOLATION_FIELDS = list(ViolationIn.model_fields)


@pytest.fixture(scope="module")
def valid_capture():
    """A valid capture with a real JPEG (made once: Pillow is the slow part)."""
    return payload(capture_id="FUZZ-BASE")


@pytest.mark.django_db
@FUZZ
@given(
    field=st.sampled_from(VIOLATION_FIELDS),
    value=JSON_VALUES,
    raw=st.one_of(st.none(), st.sampled_from(RAW_JSON_BODIES)),
)
def test_intake_raw_bodies_and_wrong_values(client, api_key, vehicle, valid_capture, fresh_limits, field, value, raw):
    fresh_limits()
    _, token = api_key
    store = Store()
    capture = {**valid_capture, field: value}
    single = raw if raw is not None else json.dumps(capture).encode()
    batch = raw if raw is not None else json.dumps({"violations": [capture]}).encode()
    for url, body in [("/api/v1/violations", single), ("/api/v1/violations/batch", batch)]:
        response = client.post(url, data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
        status = answer(response, store)
        if raw is not None:
            assert status in {400, 413, 415, 422}
        store = Store()
