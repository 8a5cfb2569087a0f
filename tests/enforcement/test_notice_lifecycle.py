"""The notice's own states move only through enforcement's services."""

from __future__ import annotations

from cakra.enforcement.models import Notice
from cakra.enforcement.services import notices_mark_notified
from tests.factories import VehicleFactory, make_notice


def test_an_issued_notice_moves_to_notified_once(vehicle, region, django_assert_num_queries):
    first = make_notice(vehicle=vehicle, region=region, capture_id="CAP-N1")
    second = make_notice(vehicle=VehicleFactory.create(plate="B 55 NTF"), region=region, capture_id="CAP-N2")
    assert {first.status, second.status} == {Notice.Status.ISSUED}

    with django_assert_num_queries(1):  # one conditional UPDATE for any number of notices
        moved = notices_mark_notified(notice_ids=[first.pk, second.pk])

    assert sorted(moved) == sorted([first.pk, second.pk])
    assert set(Notice.objects.values_list("status", flat=True)) == {Notice.Status.NOTIFIED}
    # A second accepted message of the same notice (another channel, a retry) moves nothing.
    assert notices_mark_notified(notice_ids=[first.pk]) == []


def test_only_issued_notices_move(vehicle, region):
    notice = make_notice(vehicle=vehicle, region=region)
    Notice.objects.filter(pk=notice.pk).update(status=Notice.Status.CANCELLED)

    assert notices_mark_notified(notice_ids=[notice.pk]) == []
    notice.refresh_from_db()
    assert notice.status == Notice.Status.CANCELLED


def test_no_notices_cost_no_query(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert notices_mark_notified(notice_ids=[]) == []
