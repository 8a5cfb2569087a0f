"""Stored cross-site scripting: markup planted in every text a camera system,
the registry, a provider or an administrator can put in the database, written
straight into the rows (past any intake validation), must come out escaped on
every portal and back-office page; and every HTML answer carries a
Content-Security-Policy that would stop an injected script anyway."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.html import escape

from cakra.backoffice.models import Officer
from cakra.delivery.models import Delivery
from cakra.delivery.receipts import ReceiptReport, receipts_record
from cakra.enforcement.models import Region, Violation
from cakra.registry.models import ContactPoint, Owner, Vehicle
from tests.security.attack_world import (
    RegionObjects,
    english_client,
    grant,
    region_objects,
    route_kwargs,
    route_url,
    sign_in,
    site_routes,
    visit,
)

SCRIPT_URL = re.compile(
    r"""(?:href|src|action|formaction)\s*=\s*["']?\s*(?:javascript|data:text/html)""", re.IGNORECASE
)


def payload(n: int, max_length: int) -> str:
    """Markup that runs script if it reaches the page unescaped, numbered so
    each field can be told apart; short fields get a shorter tag."""
    full = f"\"><img src=x onerror=alert({n})><script>alert({n})</script>'"
    if len(full) <= max_length:
        return full
    short = f'"><svg onload={n}>'
    return short if len(short) <= max_length else f"<i>{n}</i>"


# (model field, max length): every field of a row a page shows that an outsider may fill.
PLANTED = {
    "violation.location": 200,
    "violation.camera_id": 64,
    "violation.capture_id": 64,
    "violation.plate": 16,
    "violation.rejection_reason": 1000,
    "vehicle.make": 64,
    "vehicle.model": 64,
    "vehicle.colour": 32,
    "owner.name": 200,
    "owner.nik": 16,
    "contact.email": 200,
    "contact.mobile": 20,
    "contact.postal": 300,
    "officer.username": 150,
    "officer.first_name": 150,
    "region.name": 100,
    "region.whatsapp_sender": 20,
    "region.sms_sender_id": 11,
    "region.email_from_name": 100,
    "region.letterhead": 500,
    "region.signatory_name": 100,
    "delivery.last_error": 200,
    "receipt.detail": 200,
}
PAYLOADS = {field: payload(n, size) for n, (field, size) in enumerate(PLANTED.items(), start=1)}
# Where each planted text is meant to be seen: it must be there, escaped (so
# the sweep is known to have reached it), and nowhere raw.
SHOWN = {
    "violation.location",
    "violation.camera_id",
    "violation.capture_id",
    "violation.plate",
    "violation.rejection_reason",
    "vehicle.make",
    "vehicle.model",
    "vehicle.colour",
    "owner.name",
    "officer.username",
    "region.name",
    "region.whatsapp_sender",
    "region.sms_sender_id",
    "delivery.last_error",
}


def _plant(own: RegionObjects) -> Violation:
    """Write every payload into its row; returns a rejected violation carrying a reason."""

    def of(model: str, *names: str) -> dict[str, str]:
        return {name: PAYLOADS[f"{model}.{name}"] for name in names}

    Violation.objects.filter(pk__in=[own.waiting.pk, own.notice.violation_id]).update(
        **of("violation", "location", "camera_id", "plate")
    )
    Violation.objects.filter(pk=own.waiting.pk).update(**of("violation", "capture_id"))
    rejected = Violation.objects.create(
        region=own.region,
        capture_id="CAP-REJECTED",
        payload_hash="0" * 64,
        camera_id="CAM-1",
        captured_at=timezone.now() - timedelta(hours=3),
        location="Jl. Thamrin",
        plate="B 1 XSS",
        plate_compact="B1XSS",
        article=own.waiting.article,
        status=Violation.Status.REJECTED,
        decided_at=timezone.now(),
        decided_by=own.validator,
        **of("violation", "rejection_reason"),
    )
    Vehicle.objects.filter(pk=own.vehicle.pk).update(**of("vehicle", "make", "model", "colour"))
    # Encrypted columns are sealed for their row by the model's save: the ORM
    # is the only road for clear text into them.
    owner = Owner.objects.get(pk=own.vehicle.owner_id)
    owner.name = PAYLOADS["owner.name"]
    owner.nik = PAYLOADS["owner.nik"]
    owner.save()
    contacts = list(ContactPoint.objects.filter(owner=owner))
    assert {contact.kind for contact in contacts} == {"email", "mobile", "postal"}
    for contact in contacts:
        contact.value = PAYLOADS[f"contact.{contact.kind}"]
        contact.save()
    Officer.objects.filter(pk=own.validator.pk).update(**of("officer", "username", "first_name"))
    Region.objects.filter(pk=own.region.pk).update(
        **of("region", "name", "whatsapp_sender", "sms_sender_id", "email_from_name", "letterhead", "signatory_name")
    )
    email = own.notice.deliveries.get(channel="email")
    Delivery.objects.filter(pk=email.pk).update(
        status=Delivery.Status.SENT, provider="smtp", provider_reference="<xss@example.org>", sent_at=timezone.now()
    )
    # A provider's free text arrives through the receipt service (which cleans addresses, not markup).
    receipts_record(
        provider="smtp",
        reports=[
            ReceiptReport(
                provider_reference="<xss@example.org>",
                event="failed",
                occurred_at=timezone.now(),
                event_id="evt-xss",
                detail=PAYLOADS["receipt.detail"],
            )
        ],
    )[0]
    Delivery.objects.filter(pk=email.pk).update(**of("delivery", "last_error"))
    return rejected


@pytest.fixture
def planted(region):
    own = region_objects(region, plate_prefix="B", tag="XSS")
    rejected = _plant(own)
    return own, rejected


def _every_page(own: RegionObjects, rejected: Violation) -> dict[str, bytes]:
    """Every GET route as a signed-in officer who also holds the citizen's grant, plus the rejected violation."""
    # The administrator sees every back-office page, the list of officers included.
    client = grant(sign_in(english_client(), own.admin), own.notice)
    pages = {}
    for route in site_routes():
        response = visit(client, "get", route_url(route, route_kwargs(route, own)))
        if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
            pages[route.name] = response.content_bytes
    pages["rejected violation"] = visit(client, "get", f"/backoffice/violations/{rejected.id}/").content_bytes
    return pages


def test_planted_markup_is_escaped_on_every_page_that_shows_it(planted):
    pages = _every_page(*planted)
    assert {
        "backoffice:queue",
        "backoffice:violation",
        "backoffice:notice",
        "backoffice:officers",
        "portal:home",
        "portal:notice",
    } <= set(pages)

    shown = set()
    for name, body in pages.items():
        text = body.decode()
        for field, markup in PAYLOADS.items():
            assert markup not in text, f"{field} reaches {name} unescaped"
            if escape(markup) in text:
                shown.add(field)
        assert not SCRIPT_URL.search(text), name
    assert shown >= SHOWN, SHOWN - shown


def test_every_html_answer_has_a_script_policy_without_inline_code(planted):
    own, _rejected = planted
    signed_in = sign_in(english_client(), own.admin)
    answers = []
    for route in site_routes():
        url = route_url(route, route_kwargs(route, own))
        answers.append((f"anonymous get {route}", visit(english_client(), "get", url)))
        answers.append((f"anonymous post {route}", visit(english_client(), "post", url)))
        answers.append((f"officer get {route}", visit(signed_in, "get", url)))
    # Error pages are HTML too: unknown path, unknown id, a forged POST.
    answers.append(("unknown path", visit(english_client(), "get", "/no-such-page/")))
    answers.append(("unknown id", visit(signed_in, "get", f"/backoffice/violations/{own.notice.id}/")))
    answers.append(("csrf failure", visit(english_client(enforce_csrf_checks=True), "post", "/cek/")))

    html = [(label, r) for label, r in answers if r.get("Content-Type", "").startswith("text/html") and r.content_bytes]
    assert {
        "officer get backoffice:queue",
        "officer get backoffice:violation",
        "officer get backoffice:notice",
        "officer get backoffice:officers",
        "officer get backoffice:password_change",
        "officer get backoffice:reauth",
        "anonymous get portal:home",
        "anonymous post portal:lookup",
        "csrf failure",
        "unknown path",
    } <= {label for label, _ in html}
    for label, response in html:
        policy = response["Content-Security-Policy"]
        directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
        assert directives["default-src"] == "'none'", label
        assert "'unsafe-inline'" not in policy, label
        assert "'unsafe-eval'" not in policy, label
        assert "*" not in directives.get("script-src", ""), label
        assert "data:" not in directives.get("script-src", ""), label
        assert directives["frame-ancestors"] == "'none'", label
        assert "<script>" not in response.content_bytes.decode(), label  # nothing the policy would have to block
