"""The review queue, violation detail, evidence images, decisions and notices,
each scoped to the officer's region."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.backoffice.decisions import violation_validate
from cakra.backoffice.models import Officer
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.numbers import notice_number_display
from cakra.registry.models import ContactPoint
from tests.backoffice.conftest import sign_in
from tests.factories import VehicleFactory

QUEUE = reverse("backoffice:queue")


def detail_url(violation):
    return reverse("backoffice:violation", args=[violation.id])


def validate_url(violation):
    return reverse("backoffice:validate", args=[violation.id])


def reject_url(violation):
    return reverse("backoffice:reject", args=[violation.id])


# --- Queue ---------------------------------------------------------------------


def test_queue_lists_waiting_violations_of_the_officers_region_oldest_first(
    officer_client, make_violation, other_region, vehicle
):
    newer = make_violation(vehicle=vehicle, location="Jl. Thamrin")
    older = make_violation(location="Jl. Gatot Subroto")
    Violation.objects.filter(pk=older.pk).update(received_at=timezone.now() - timedelta(days=1))
    elsewhere = make_violation(violation_region=other_region, location="Jl. Asia Afrika Bandung", plate="D 1 AB")
    decided = make_violation(location="Jl. Rasuna Said")
    Violation.objects.filter(pk=decided.pk).update(status=Violation.Status.REJECTED, decided_at=timezone.now())

    response = officer_client.get(QUEUE)
    assert response.status_code == 200
    rows = list(response.context["page"].object_list)
    assert rows == [older, newer]
    html = response.content.decode()
    assert "Jl. Thamrin" in html
    assert "Jl. Asia Afrika Bandung" not in html
    assert str(elsewhere.id) not in html
    assert "Jl. Rasuna Said" not in html
    assert vehicle.plate in html
    assert "Matched" in html  # newer has a registry match
    assert "No match" in html  # older has none
    assert "Art. 287(2)" in html


def test_queue_counts_waiting_and_todays_decisions(officer_client, make_violation, other_region, officer):
    make_violation()
    make_violation()
    for status in ("validated", "validated", "rejected"):
        v = make_violation()
        Violation.objects.filter(pk=v.pk).update(status=status, decided_at=timezone.now(), decided_by=officer)
    yesterday = make_violation()
    Violation.objects.filter(pk=yesterday.pk).update(status="validated", decided_at=timezone.now() - timedelta(days=2))
    other = make_violation(violation_region=other_region)
    Violation.objects.filter(pk=other.pk).update(status="validated", decided_at=timezone.now())

    response = officer_client.get(QUEUE)
    assert response.context["waiting"] == 2
    assert response.context["counts"].validated_today == 2
    assert response.context["counts"].rejected_today == 1


def test_queue_is_paginated_fifty_a_page(officer_client, make_violation):
    for _ in range(51):
        make_violation()
    first = officer_client.get(QUEUE)
    assert len(first.context["page"].object_list) == 50
    assert first.context["waiting"] == 51
    second = officer_client.get(QUEUE, {"page": 2})
    assert len(second.context["page"].object_list) == 1
    # A nonsense page number shows a page, not an error.
    assert officer_client.get(QUEUE, {"page": "x"}).status_code == 200


def test_queue_query_count_does_not_grow_with_rows(officer_client, make_violation, django_assert_max_num_queries):
    make_violation(vehicle=VehicleFactory())
    with CaptureQueriesContext(connection) as few:
        officer_client.get(QUEUE)
    for _ in range(49):
        make_violation(vehicle=VehicleFactory())
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = officer_client.get(QUEUE)
    assert len(response.context["page"].object_list) == 50


# --- Detail --------------------------------------------------------------------


def test_detail_shows_capture_article_fine_and_a_masked_registry_match(officer_client, make_violation, vehicle):
    violation = make_violation(vehicle=vehicle)
    owner = vehicle.owner
    mobile = ContactPoint.objects.get(owner=owner, kind="mobile").value
    email = ContactPoint.objects.get(owner=owner, kind="email").value
    address = ContactPoint.objects.get(owner=owner, kind="postal").value

    response = officer_client.get(detail_url(violation))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Jl. Jend. Sudirman, Jakarta Pusat" in html
    assert "CAM-SUDIRMAN-01" in html
    assert "Running a red light" in html
    assert "Rp500.000" in html
    for shown in (vehicle.plate, "Toyota", "Avanza", "Hitam", "2020", owner.name):
        assert shown in html
    # Identifiers are masked: the officer sees that they exist, not what they are.
    assert owner.nik not in html
    assert "*" * 12 + owner.nik[-4:] in html
    assert mobile not in html
    assert mobile[:6] + "****" + mobile[-4:] in html
    assert email not in html
    assert email[0] + "***@example.co.id" in html
    assert address not in html
    # Chassis and engine numbers never reach the page.
    assert vehicle.chassis_number not in html
    assert vehicle.engine_number not in html
    assert "style=" not in html
    assert "<script" not in html


def test_detail_without_registry_match_says_so(officer_client, make_violation):
    response = officer_client.get(detail_url(make_violation()))
    assert "No vehicle in the registry matches this plate" in response.content.decode()


def test_detail_shows_the_derivative_or_a_processing_placeholder(officer_client, make_violation, make_evidence):
    violation = make_violation()
    ready = make_evidence(violation, position=1)
    pending = make_evidence(violation, derived=False, position=2)
    html = officer_client.get(detail_url(violation)).content.decode()
    assert reverse("backoffice:evidence", args=[ready.id]) in html
    assert reverse("backoffice:evidence", args=[pending.id]) not in html
    assert "Photo being processed" in html


def test_another_regions_violation_and_an_unknown_id_are_the_same_404(officer_client, make_violation, other_region):
    elsewhere = make_violation(violation_region=other_region)
    foreign = officer_client.get(detail_url(elsewhere))
    unknown = officer_client.get(reverse("backoffice:violation", args=[uuid.uuid4()]))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.content == unknown.content
    assert officer_client.get("/backoffice/violations/not-a-uuid/").status_code == 404


# --- Evidence images -------------------------------------------------------------


def test_evidence_serves_the_derivative_with_safe_headers(officer_client, make_violation, make_evidence):
    evidence = make_evidence(make_violation())
    response = officer_client.get(reverse("backoffice:evidence", args=[evidence.id]))
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    with evidence.derivative.open("rb") as handle:
        assert body == handle.read()
    with evidence.original.open("rb") as handle:
        assert body != handle.read()
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "no-store"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == "inline"


def test_evidence_of_another_region_unknown_or_not_derived_is_404(
    officer_client, make_violation, make_evidence, other_region
):
    foreign = make_evidence(make_violation(violation_region=other_region))
    not_ready = make_evidence(make_violation(), derived=False)
    for evidence_id in (foreign.id, not_ready.id, uuid.uuid4()):
        response = officer_client.get(reverse("backoffice:evidence", args=[evidence_id]))
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")


# --- Decisions -------------------------------------------------------------------


def test_validate_issues_a_notice_and_moves_to_the_next_violation(officer_client, make_violation, vehicle, officer):
    violation = make_violation(vehicle=vehicle)
    following = make_violation()
    response = officer_client.post(validate_url(violation))
    assert response.status_code == 302
    assert response["Location"] == detail_url(following)

    violation.refresh_from_db()
    assert violation.status == "validated"
    assert violation.decided_by == officer
    notice = Notice.objects.get(violation=violation)
    assert Delivery.objects.filter(notice=notice).exists()
    page = officer_client.get(response["Location"])
    assert f"Notice {notice_number_display(notice.number)} was issued" in page.content.decode()
    assert AuditEvent.objects.filter(action="violation.validated", actor_id=str(officer.pk)).exists()


def test_validating_the_last_one_returns_to_the_queue(officer_client, make_violation, vehicle):
    response = officer_client.post(validate_url(make_violation(vehicle=vehicle)))
    assert response["Location"] == QUEUE


def test_validate_without_registry_match_shows_why_and_changes_nothing(officer_client, make_violation):
    violation = make_violation()
    response = officer_client.post(validate_url(violation), follow=True)
    assert "No vehicle in the registry matches this plate, so no notice can be issued" in response.content.decode()
    violation.refresh_from_db()
    assert violation.status == "received"
    assert not Notice.objects.exists()


def test_deciding_twice_is_refused(officer_client, make_violation, vehicle):
    violation = make_violation(vehicle=vehicle)
    officer_client.post(validate_url(violation))
    response = officer_client.post(reject_url(violation), {"reason": "late second thoughts"}, follow=True)
    assert "This violation has already been decided." in response.content.decode()
    violation.refresh_from_db()
    assert violation.status == "validated"
    assert violation.rejection_reason == ""


def test_reject_requires_a_reason_of_at_most_1000_characters(officer_client, make_violation):
    violation = make_violation()
    for reason in ("", "   ", "x" * 1001):
        response = officer_client.post(reject_url(violation), {"reason": reason})
        assert response.status_code == 400
        violation.refresh_from_db()
        assert violation.status == "received"
    assert (
        "A reason is required to reject a violation."
        in officer_client.post(reject_url(violation), {"reason": ""}).content.decode()
    )

    response = officer_client.post(reject_url(violation), {"reason": "Plate unreadable: glare on the photo."})
    assert response["Location"] == QUEUE
    violation.refresh_from_db()
    assert violation.status == "rejected"
    assert violation.rejection_reason == "Plate unreadable: glare on the photo."
    assert not Notice.objects.exists()


def test_an_auditor_sees_but_cannot_decide(make_officer, make_violation, vehicle):
    _, auditor = make_officer(role=Officer.Role.AUDITOR)
    violation = make_violation(vehicle=vehicle)
    page = auditor.get(detail_url(violation))
    assert page.status_code == 200
    html = page.content.decode()
    assert validate_url(violation) not in html
    assert "Your role can view violations but not decide them." in html
    assert auditor.post(validate_url(violation)).status_code == 403
    assert auditor.post(reject_url(violation), {"reason": "no"}).status_code == 403
    violation.refresh_from_db()
    assert violation.status == "received"


@pytest.mark.parametrize("role", [Officer.Role.SUPERVISOR, Officer.Role.ADMIN])
def test_supervisors_and_admins_may_decide(make_officer, make_violation, vehicle, role):
    _, client = make_officer(role=role)
    violation = make_violation(vehicle=vehicle)
    assert client.post(validate_url(violation)).status_code == 302
    violation.refresh_from_db()
    assert violation.status == "validated"


def test_deciding_another_regions_violation_is_404_and_changes_nothing(officer_client, make_violation, other_region):
    elsewhere = make_violation(violation_region=other_region, vehicle=VehicleFactory())
    assert officer_client.post(validate_url(elsewhere)).status_code == 404
    assert officer_client.post(reject_url(elsewhere), {"reason": "not mine"}).status_code == 404
    elsewhere.refresh_from_db()
    assert elsewhere.status == "received"


def test_decisions_are_post_only(officer_client, make_violation):
    violation = make_violation()
    assert officer_client.get(validate_url(violation)).status_code == 405
    assert officer_client.get(reject_url(violation)).status_code == 405


def test_decisions_require_the_csrf_token(csrf_client, officer, otp_device, make_violation, vehicle):

    sign_in(csrf_client, officer, otp_device)
    violation = make_violation(vehicle=vehicle)
    assert csrf_client.post(validate_url(violation)).status_code == 403
    assert csrf_client.post(reject_url(violation), {"reason": "forged"}).status_code == 403
    violation.refresh_from_db()
    assert violation.status == "received"

    csrf_client.get(detail_url(violation))  # sets the CSRF cookie, as a browser would
    token = csrf_client.cookies[settings.CSRF_COOKIE_NAME].value
    response = csrf_client.post(validate_url(violation), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    violation.refresh_from_db()
    assert violation.status == "validated"


# --- Notices ---------------------------------------------------------------------


def test_notice_page_shows_the_delivery_timeline(officer_client, officer, make_violation, vehicle):
    notice = violation_validate(officer=officer, violation_id=make_violation(vehicle=vehicle).id)
    delivery = notice.deliveries.get()
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        provider="smtp",
        started_at=timezone.now(),
        duration_ms=42,
        outcome=DeliveryAttempt.Outcome.RETRYABLE,
        error="421 try again later",
    )
    response = officer_client.get(reverse("backoffice:notice", args=[notice.number]))
    assert response.status_code == 200
    html = response.content.decode()
    assert notice_number_display(notice.number) in html
    assert "Rp500.000" in html
    assert "421 try again later" in html
    assert "Temporary error" in html
    assert delivery.contact_point is not None
    email = delivery.contact_point.value
    assert email not in html
    assert email[0] + "***@" in html
    # Also reachable from the violation page.
    assert (
        reverse("backoffice:notice", args=[notice.number])
        in officer_client.get(detail_url(notice.violation)).content.decode()
    )


def test_notice_of_another_region_unknown_or_malformed_is_404(
    make_officer, officer, make_violation, vehicle, other_region
):
    notice = violation_validate(officer=officer, violation_id=make_violation(vehicle=vehicle).id)
    _, foreign_client = make_officer(officer_region=other_region)
    assert foreign_client.get(reverse("backoffice:notice", args=[notice.number])).status_code == 404
    _, own_client = make_officer()
    assert own_client.get(reverse("backoffice:notice", args=[notice.number])).status_code == 200
    wrong_check_digits = notice.number[:-2] + f"{(int(notice.number[-2:]) + 1) % 100:02d}"
    for number in (wrong_check_digits, "1234567890123456", "abc"):
        assert own_client.get(reverse("backoffice:notice", args=[number])).status_code == 404
