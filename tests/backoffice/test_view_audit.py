"""Every officer's look at personal data is an audit event with ids only (UU PDP accountability)."""

from __future__ import annotations

from django.urls import reverse

from cakra.audit.models import AuditEvent
from cakra.enforcement.evidence import evidence_derive
from tests.factories import make_notice


def _views():
    return list(AuditEvent.objects.filter(action="personal_data.viewed").order_by("created_at", "seq"))


def test_opening_a_review_page_records_one_event_with_the_officer_and_the_violation(
    officer_client, officer, make_violation, vehicle
):
    violation = make_violation(vehicle=vehicle)

    response = officer_client.get(reverse("backoffice:violation", args=[violation.id]))

    assert response.status_code == 200
    [event] = _views()
    assert (event.actor_type, event.actor_id) == ("officer", str(officer.pk))
    assert (event.object_type, event.object_id, event.region_code) == ("violation", str(violation.pk), "METRO")
    assert event.data == {"viewed": ["owner_contacts_masked", "owner_identity", "owner_nik_masked", "plate"]}
    # Ids and kinds only: nothing of what the page showed.
    owner = vehicle.owner
    stored = repr(event.data)
    for personal in (owner.name, owner.nik, vehicle.plate, violation.location):
        assert personal not in stored


def test_a_review_page_without_a_registry_match_records_the_plate_only(officer_client, make_violation):
    violation = make_violation()

    officer_client.get(reverse("backoffice:violation", args=[violation.id]))

    [event] = _views()
    assert event.data == {"viewed": ["plate"]}


def test_an_evidence_photo_and_a_notice_page_are_recorded_too(officer_client, officer, vehicle, region):
    notice = make_notice(vehicle=vehicle, region=region)
    violation = notice.violation
    evidence = violation.evidence.get()
    assert evidence_derive(evidence_id=evidence.pk)

    photo = officer_client.get(reverse("backoffice:evidence", args=[evidence.id]))
    assert b"".join(photo.streaming_content)
    page = officer_client.get(reverse("backoffice:notice", args=[notice.number]))

    assert (photo.status_code, page.status_code) == (200, 200)
    photo_event, notice_event = _views()
    assert (photo_event.object_type, photo_event.object_id) == ("evidence", str(evidence.pk))
    assert photo_event.data == {"viewed": ["evidence_photo"], "violation_id": str(violation.pk)}
    assert (notice_event.object_type, notice_event.object_id) == ("notice", str(notice.pk))
    assert notice_event.data == {"viewed": ["delivery_contacts_masked", "plate"], "violation_id": str(violation.pk)}
    assert {photo_event.actor_id, notice_event.actor_id} == {str(officer.pk)}


def test_the_queue_and_refused_looks_record_nothing(officer_client, make_violation, other_region):
    make_violation()
    elsewhere = make_violation(violation_region=other_region)

    assert officer_client.get(reverse("backoffice:queue")).status_code == 200
    assert officer_client.get(reverse("backoffice:violation", args=[elsewhere.id])).status_code == 404

    assert _views() == []
