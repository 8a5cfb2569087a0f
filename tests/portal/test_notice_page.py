"""The notice page and its evidence: only with a session grant, minimal data."""

from __future__ import annotations

import re
import uuid

from django.utils import timezone

from cakra.enforcement.models import Evidence
from cakra.enforcement.numbers import notice_number_display
from cakra.enforcement.tasks import EVIDENCE_QUEUE, evidence_derive_task
from cakra.registry.models import ContactPoint, Owner
from tests.portal.conftest import add_evidence, issue_notice

IMG_SRC_RE = re.compile(r'<img src="([^"]+)"')


def open_notice(client, issued, plate="B 1234 XYZ"):
    response = client.post("/cek/", {"number": issued.notice.number, "plate": plate})
    assert response.status_code == 303
    return client.get(response["Location"])


def test_notice_page_shows_what_the_citizen_checks(client, issued):
    notice = issued.notice
    page = open_notice(client, issued)
    body = page.content.decode()
    assert page.status_code == 200
    assert notice_number_display(notice.number) in body
    assert notice.verification_code in body
    assert "Jika berbeda, pesan itu palsu" in body
    assert "B 1234 XYZ" in body
    assert "Melanggar lampu lalu lintas (lampu merah)" in body  # article title, Indonesian
    assert "Pasal 287(2) UU 22/2009" in body
    assert "Rp500.000" in body
    assert "denda maksimal" in body
    assert "Sabtu, 28 November 2026 pukul 08.05 WIB" in body
    assert "Jl. Jend. Sudirman, Jakarta Pusat" in body
    assert "Mobil" in body
    assert "Toyota Avanza" in body
    assert "Hitam" in body
    assert "Polda Metro Jaya" in body


def test_evidence_image_serves_the_derivative_jpeg(client, issued):
    body = open_notice(client, issued).content.decode()
    sources = IMG_SRC_RE.findall(body)
    assert sources == [f"/notice/{issued.notice.id}/evidence/{issued.evidence[0].id}/"]
    image = client.get(sources[0])
    assert image.status_code == 200
    assert image.content == issued.derivative
    assert image.content[:3] == b"\xff\xd8\xff"
    assert image["Content-Type"] == "image/jpeg"
    assert image["Cache-Control"] == "no-store"
    assert image["X-Content-Type-Options"] == "nosniff"
    assert image["Content-Disposition"] == "inline"
    # Never the original (kept byte for byte for the chain of custody).
    with issued.evidence[0].original.open("rb") as original:
        assert image.content != original.read()


def test_evidence_not_yet_derived_is_asked_of_a_worker_on_first_view(
    client, vehicle, officer, region, django_capture_on_commit_callbacks, monkeypatch
):

    sent = []
    monkeypatch.setattr(evidence_derive_task, "apply_async", lambda args, queue: sent.append((args, queue)))
    pending = issue_notice(vehicle=vehicle, region=region, capture_id="CAP-P", derived=False)
    with django_capture_on_commit_callbacks(execute=True):
        body = open_notice(client, pending).content.decode()
    assert "Foto sedang diproses" in body
    url = f"/notice/{pending.notice.id}/evidence/{pending.evidence[0].id}/"
    assert url not in body
    assert client.get(url).status_code == 404
    assert sent == [((str(pending.evidence[0].id),), EVIDENCE_QUEUE)]
    pending.evidence[0].refresh_from_db()
    assert pending.evidence[0].derived_at is None
    # A reload within the request interval queues nothing more.
    with django_capture_on_commit_callbacks(execute=True):
        client.get(f"/notice/{pending.notice.id}/")
    assert len(sent) == 1


def test_evidence_given_up_on_says_not_available(client, vehicle, officer, region):

    broken = issue_notice(vehicle=vehicle, region=region, capture_id="CAP-B", derived=False)
    evidence = broken.evidence[0]
    Evidence.objects.filter(pk=evidence.pk).update(derive_failed_at=timezone.now())
    body = open_notice(client, broken).content.decode()
    assert "Foto tidak tersedia secara daring" in body
    assert "Foto sedang diproses" not in body
    assert client.get(f"/notice/{broken.notice.id}/evidence/{evidence.id}/").status_code == 404


def test_notice_page_without_a_grant_redirects_to_lookup(client, issued):
    response = client.get(f"/notice/{issued.notice.id}/")
    assert response.status_code == 302
    assert response["Location"] == "/cek/"


def test_unknown_notice_id_redirects_the_same_way(client, issued):
    open_notice(client, issued)  # a session with a grant, for another notice
    granted_elsewhere = client.get(f"/notice/{uuid.uuid4()}/")
    fresh = type(client)().get(f"/notice/{uuid.uuid4()}/")
    assert granted_elsewhere.status_code == fresh.status_code == 302
    assert granted_elsewhere["Location"] == fresh["Location"] == "/cek/"


def test_grant_for_one_notice_does_not_open_another(client, issued, other_issued):
    open_notice(client, issued)
    other = other_issued.notice
    assert client.get(f"/notice/{other.id}/").status_code == 302
    other_image = f"/notice/{other.id}/evidence/{other_issued.evidence[0].id}/"
    assert client.get(other_image).status_code == 404


def test_evidence_of_another_notice_through_a_granted_url_is_404(client, issued, other_issued):
    open_notice(client, issued)
    crossed = f"/notice/{issued.notice.id}/evidence/{other_issued.evidence[0].id}/"
    assert client.get(crossed).status_code == 404
    assert client.get(f"/notice/{issued.notice.id}/evidence/{uuid.uuid4()}/").status_code == 404


def test_evidence_without_any_grant_is_404(client, issued):
    url = f"/notice/{issued.notice.id}/evidence/{issued.evidence[0].id}/"
    assert client.get(url).status_code == 404


def test_grant_expires(client, issued, settings):
    settings.CAKRA_PORTAL_GRANT_SECONDS = 0
    response = client.post("/cek/", {"number": issued.notice.number, "plate": "B 1234 XYZ"})
    assert response.status_code == 303
    assert client.get(response["Location"]).status_code == 302
    assert client.get(f"/notice/{issued.notice.id}/evidence/{issued.evidence[0].id}/").status_code == 404


def test_finish_forgets_the_grant(client, issued):
    open_notice(client, issued)
    assert client.post("/selesai/").status_code == 303
    assert client.get(f"/notice/{issued.notice.id}/").status_code == 302


def test_owner_personal_data_never_appears(client, issued):
    owner = Owner.objects.get(pk=issued.notice.owner_id)
    contacts = list(ContactPoint.objects.filter(owner=owner))
    assert owner.name
    assert owner.nik
    assert {c.kind for c in contacts} == {"postal", "mobile", "email"}
    body = open_notice(client, issued).content.decode()
    assert owner.name not in body
    assert owner.nik not in body
    for contact in contacts:
        assert contact.value not in body
        # Addresses are long: no fragment of them either.
        for part in contact.value.split(","):
            if len(part.strip()) > 6:
                assert part.strip() not in body
    assert issued.notice.vehicle.chassis_number not in body
    assert issued.notice.vehicle.engine_number not in body


def test_pages_carry_no_inline_style_or_script(client, issued):
    """The CSP forbids them; a page relying on them would break silently."""
    for body in (
        client.get("/").content.decode(),
        client.get("/cek/").content.decode(),
        open_notice(client, issued).content.decode(),
    ):
        assert "<script" not in body
        assert "<style" not in body
        assert " style=" not in body
        assert "http://" not in body
        assert "https://" not in body


def test_second_evidence_photo_is_listed_in_order(client, issued):
    second = add_evidence(issued.notice.violation, position=2, derived=True, colour=(10, 200, 10))
    body = open_notice(client, issued).content.decode()
    assert IMG_SRC_RE.findall(body) == [
        f"/notice/{issued.notice.id}/evidence/{issued.evidence[0].id}/",
        f"/notice/{issued.notice.id}/evidence/{second.id}/",
    ]


def test_notice_page_query_count_stays_flat(client, issued, django_assert_max_num_queries):
    """Session, notice with its joins, evidence list: no query per photo."""
    add_evidence(issued.notice.violation, position=2, derived=True)
    add_evidence(issued.notice.violation, position=3, derived=False)
    open_notice(client, issued)
    with django_assert_max_num_queries(3):
        response = client.get(f"/notice/{issued.notice.id}/")
    assert response.status_code == 200
