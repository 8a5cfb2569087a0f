"""POST /api/v1/violations/batch: per-item results, idempotency, isolation, limits."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cakra.api import intake
from cakra.api.services import apikey_revoke
from cakra.audit.models import AuditEvent
from cakra.enforcement.models import Evidence, Notice, Violation
from tests.api.helpers import (
    StoreSnapshot,
    assert_error,
    evidence_files,
    get,
    image_bytes,
    jpeg_bytes,
    payload,
    post,
)
from tests.factories import ApiKeyFactory, VehicleFactory

BATCH_URL = "/api/v1/violations/batch"
SMALL_JPEG = jpeg_bytes(size=(64, 48))


def post_batch(client, token, body, **extra):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(BATCH_URL, data=raw, content_type="application/json", **headers, **extra)


# One capture time for the whole module: items built twice must be the same capture.
CAPTURED_AT = timezone.localtime(timezone.now() - timedelta(hours=2)).isoformat()


def item(n, **overrides):
    """A small valid capture (one 64x48 JPEG) with capture id BATCH-<n>."""
    images = overrides.pop("images", [("vehicle", SMALL_JPEG)])
    overrides.setdefault("captured_at", CAPTURED_AT)
    return payload(capture_id=f"BATCH-{n}", images=images, **overrides)


def answered(response, expected_items):
    assert response.status_code == 200, response.content
    answer = response.json()
    assert [result["index"] for result in answer["results"]] == list(range(expected_items))
    return answer


def test_a_mixed_batch_answers_each_item_and_stores_only_the_good_ones(client, api_key, vehicle):
    _, token = api_key
    stored_before = post(client, token, item("STORED"))
    assert stored_before.status_code == 201
    store = StoreSnapshot()
    body = {
        "violations": [
            item(1),
            item("STORED"),  # same content: replay
            item("STORED", location="Jl. M.H. Thamrin"),  # same capture id, other content: conflict
            item(3, plate="not a plate"),
            item(4, images=[("vehicle", b"GIF89a" + b"\x00" * 64)]),
            item(5, article="999(9)"),
            item(6, images=[("vehicle", SMALL_JPEG[:-200])]),  # truncated JPEG
            item(7, plate="B 9 ZZ"),  # no registry match: still stored
        ]
    }

    answer = answered(post_batch(client, token, body), 8)

    statuses = [result["status"] for result in answer["results"]]
    assert statuses == [201, 200, 409, 422, 415, 422, 422, 201]
    assert (answer["created"], answer["replayed"], answer["rejected"]) == (2, 1, 5)
    first, replay, conflict, plate, gif, article, truncated, unmatched = answer["results"]
    assert first["error"] is None
    assert first["violation"]["capture_id"] == "BATCH-1"
    assert first["violation"]["status"] == "received"
    assert replay["violation"] == stored_before.json()
    assert unmatched["violation"]["status"] == "received"
    for result, code, field in (
        (conflict, "conflict", "violations[2].capture_id"),
        (plate, "invalid_plate", "violations[3].plate"),
        (gif, "unsupported_media_type", "violations[4].evidence[0].content_base64"),
        (article, "unknown_article", "violations[5].article"),
        (truncated, "invalid_image", "violations[6].evidence[0].content_base64"),
    ):
        assert result["violation"] is None
        assert result["error"]["code"] == code
        assert result["error"]["field"] == field
        assert result["error"]["message"]

    # Exactly the two new captures were stored, with one file and one audit event each.
    new = Violation.objects.filter(capture_id__in=["BATCH-1", "BATCH-7"])
    assert {str(v.pk) for v in new} == {first["violation"]["id"], unmatched["violation"]["id"]}
    assert Violation.objects.count() == store.before[0] + 2
    new_evidence = Evidence.objects.filter(violation__in=new)
    assert new_evidence.count() == 2
    added = evidence_files() - store.before[2]
    assert {str(path) for path in added} == {e.original.path for e in new_evidence}
    assert AuditEvent.objects.filter(action="violation.received").count() == 3


def test_files_on_disk_belong_to_stored_evidence_only(client, api_key, vehicle):
    _, token = api_key
    store = StoreSnapshot()
    body = {
        "violations": [item(1), item(2, plate="??"), item(3, images=[("vehicle", SMALL_JPEG), ("plate", b"x" * 10)])]
    }

    answer = answered(post_batch(client, token, body), 3)

    assert [result["status"] for result in answer["results"]] == [201, 422, 415]
    added = evidence_files() - store.before[2]
    stored = {Evidence.objects.get(violation__capture_id="BATCH-1").original.path}
    assert {str(path) for path in added} == stored


def test_schema_errors_are_per_item_and_name_the_field(client, api_key, vehicle):
    _, token = api_key
    store = StoreSnapshot()
    missing_plate = item(1)
    del missing_plate["plate"]
    body = {
        "violations": [
            missing_plate,
            {},
            item(2, latitude=91.0),
            item(3, unexpected="field"),
            item(4, evidence=[{"kind": "vehicle", "content_base64": "not base64!"}]),
            item(5, measured_speed_kmh="80"),  # strict: a string is not a speed
        ]
    }

    answer = answered(post_batch(client, token, body), 6)

    assert [result["status"] for result in answer["results"]] == [422] * 6
    errors = [result["error"] for result in answer["results"]]
    assert errors[0]["field"] == "violations[0].plate"
    assert errors[0]["code"] == "validation_error"
    assert errors[1]["field"].startswith("violations[1].")
    assert errors[2]["field"] == "violations[2].latitude"
    assert errors[3]["field"] == "violations[3].unexpected"
    assert (errors[4]["code"], errors[4]["field"]) == ("invalid_base64", "violations[4].evidence[0].content_base64")
    assert errors[5]["field"] == "violations[5].measured_speed_kmh"
    assert answer["rejected"] == 6
    store.assert_unchanged()


@pytest.mark.parametrize("stray", ["not an object", 7, None, [], True])
def test_an_item_that_is_not_an_object_refuses_the_whole_batch(client, api_key, vehicle, stray):
    """The schema admits any object as an item (refused in its own result when it is not a capture),
    nothing else: an item of another type is not a capture at all, and the batch is refused whole."""
    _, token = api_key
    store = StoreSnapshot()

    response = post_batch(client, token, {"violations": [item(1), stray, item(2)]})

    assert_error(response, 422, "validation_error", "violations[1]")
    store.assert_unchanged()


def test_the_same_capture_twice_in_one_batch_is_one_violation(client, api_key, vehicle):
    _, token = api_key
    body = {
        "violations": [
            item("TWICE"),
            item("TWICE"),
            item("TWICE", plate="b1234xyz"),  # respelled: the same capture
            item("TWICE", location="elsewhere"),
        ]
    }

    answer = answered(post_batch(client, token, body), 4)

    assert [result["status"] for result in answer["results"]] == [201, 200, 200, 409]
    ids = {result["violation"]["id"] for result in answer["results"][:3]}
    assert len(ids) == 1
    assert answer["results"][3]["error"]["field"] == "violations[3].capture_id"
    assert Violation.objects.filter(capture_id="BATCH-TWICE").count() == 1
    assert Evidence.objects.filter(violation__capture_id="BATCH-TWICE").count() == 1
    assert AuditEvent.objects.filter(action="violation.received").count() == 1


def test_a_repeat_after_a_refused_first_item_is_a_new_capture(client, api_key, vehicle):
    """As if sent one by one: the refused first item stored nothing, so the second is new."""
    _, token = api_key
    body = {"violations": [item("AGAIN", article="999(9)"), item("AGAIN")]}

    answer = answered(post_batch(client, token, body), 2)

    assert [result["status"] for result in answer["results"]] == [422, 201]


def test_a_whole_batch_sent_twice_is_replayed(client, api_key, vehicle):
    _, token = api_key
    body = {"violations": [item(n) for n in range(5)] + [item(99, plate="??")]}
    first = answered(post_batch(client, token, body), 6)
    store = StoreSnapshot()
    events = AuditEvent.objects.count()

    second = answered(post_batch(client, token, body), 6)

    assert (first["created"], first["replayed"], first["rejected"]) == (5, 0, 1)
    assert (second["created"], second["replayed"], second["rejected"]) == (0, 5, 1)
    assert [r["status"] for r in second["results"]] == [200] * 5 + [422]
    assert [r["violation"] for r in second["results"][:5]] == [r["violation"] for r in first["results"][:5]]
    store.assert_unchanged()
    assert AuditEvent.objects.count() == events


def test_batches_spanning_several_chunks_keep_order_and_repeats(client, api_key, vehicle, monkeypatch):

    monkeypatch.setattr(intake, "CHUNK_SIZE", 3)
    _, token = api_key
    # The repeat of capture 1 lands in a later chunk than its first occurrence.
    body = {"violations": [item(n) for n in range(7)] + [item(1), item(3, location="elsewhere")]}

    answer = answered(post_batch(client, token, body), 9)

    assert [r["status"] for r in answer["results"]] == [201] * 7 + [200, 409]
    assert answer["results"][7]["violation"]["id"] == answer["results"][1]["violation"]["id"]
    assert Violation.objects.filter(capture_id__startswith="BATCH-").count() == 7


def test_pre_validated_key_issues_a_notice_per_matched_item(
    client, pre_validated_key, vehicle, django_capture_on_commit_callbacks
):
    _, token = pre_validated_key
    VehicleFactory(plate="B 77 QQ")
    body = {"violations": [item(1), item(2, plate="B 77 QQ"), item(3, plate="B 9 ZZ"), item(4, plate="??")]}

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        answer = answered(post_batch(client, token, body), 4)

    first, second, unmatched, _ = answer["results"]
    assert [r["status"] for r in answer["results"]] == [201, 201, 201, 422]
    for result in (first, second):
        notice = Notice.objects.get(violation_id=result["violation"]["id"])
        assert result["violation"]["status"] == "received"  # the notice stays internal
        assert notice.violation.decided_at is not None
    assert Notice.objects.get(violation_id=first["violation"]["id"]).vehicle_id == vehicle.id
    second_vehicle = Notice.objects.get(violation_id=second["violation"]["id"]).vehicle
    assert second_vehicle is not None
    assert second_vehicle.plate == "B 77 QQ"
    # No registry match: waits for an officer, as on the single route.
    assert unmatched["violation"]["status"] == "received"
    assert not Notice.objects.filter(violation_id=unmatched["violation"]["id"]).exists()
    assert Notice.objects.count() == 2
    assert AuditEvent.objects.filter(action="notice.issued").count() == 2
    # After commit: a derive task only for the capture an officer will review
    # (notices issued at once derive on first view), and one publish of the
    # notices' first deliveries over one broker connection.
    assert len(callbacks) == 1 + 1

    replay = answered(post_batch(client, token, body), 4)
    assert [r["violation"] for r in replay["results"][:3]] == [r["violation"] for r in answer["results"][:3]]
    assert Notice.objects.count() == 2


@pytest.mark.parametrize("pre_validated", [True, False])
def test_each_answer_is_what_the_status_route_then_reads(client, region, vehicle, pre_validated):
    """The batch answers from the rows it has just written, without reading them back: the same
    answer, to the byte, as GET /api/v1/violations/<id> gives afterwards."""
    _, token = ApiKeyFactory.with_token(region=region, pre_validated=pre_validated)
    body = {"violations": [item(1), item(2, plate="B 9 ZZ"), item(1), item(3)]}

    answer = answered(post_batch(client, token, body), 4)

    assert [r["status"] for r in answer["results"]] == [201, 201, 200, 201]
    for result in answer["results"]:
        status = get(client, token, f"violations/{result['violation']['id']}")
        assert status.status_code == 200
        assert result["violation"] == status.json()
    matched = answer["results"][0]["violation"]
    assert matched["status"] == "received"
    assert Notice.objects.filter(violation_id=matched["id"]).exists() is pre_validated


def test_a_pre_validated_capture_is_stored_validated_in_one_write(client, pre_validated_key, vehicle):
    """No UPDATE of the rows just inserted; its audit trail is the same: received, validated, notice issued, planned."""

    _, token = pre_validated_key
    with CaptureQueriesContext(connection) as queries:
        answer = answered(post_batch(client, token, {"violations": [item(1), item(2, plate="B 9 ZZ")]}), 2)

    assert not [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "enforcement_violation"')]
    matched, unmatched = (Violation.objects.get(pk=r["violation"]["id"]) for r in answer["results"])
    assert (matched.status, matched.pre_validated, matched.decided_by_id) == ("validated", True, None)
    assert matched.decided_at is not None
    assert (unmatched.status, unmatched.pre_validated, unmatched.decided_at) == ("received", False, None)
    notice = Notice.objects.get(violation=matched)
    trail = [
        (event.action, event.object_id)
        for event in AuditEvent.objects.filter(
            action__in=["violation.received", "violation.validated", "notice.issued", "delivery.planned"]
        ).order_by("chain", "seq")
    ]
    assert trail == [
        ("violation.received", str(matched.pk)),
        ("violation.received", str(unmatched.pk)),
        ("violation.validated", str(matched.pk)),
        ("notice.issued", str(notice.pk)),
        ("delivery.planned", str(notice.pk)),
    ]
    validated = AuditEvent.objects.get(action="violation.validated")
    assert validated.data == {"pre_validated": True}
    assert validated.actor_type == "api_key"


def test_capture_ids_are_scoped_per_region(client, api_key, other_region, vehicle):
    _, token = api_key
    _, other_token = ApiKeyFactory.with_token(region=other_region)
    theirs = answered(post_batch(client, other_token, {"violations": [item(1), item(2)]}), 2)

    # The same capture ids here are new captures of this region, never a replay of theirs.
    mine = answered(post_batch(client, token, {"violations": [item(1), item(2, location="elsewhere")]}), 2)

    assert [r["status"] for r in mine["results"]] == [201, 201]
    their_ids = {r["violation"]["id"] for r in theirs["results"]}
    assert not their_ids & {r["violation"]["id"] for r in mine["results"]}
    assert Violation.objects.filter(region=other_region).count() == 2


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer cakra_0000_wrong", "Basic dXNlcjpwYXNz", "Bearer "],
)
def test_bad_keys_are_refused_as_on_the_single_route(client, api_key, authorization):
    store = StoreSnapshot()
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    body = json.dumps({"violations": [item(1)]})

    batch = client.post(BATCH_URL, data=body, content_type="application/json", **extra)
    single = client.post("/api/v1/violations", data=json.dumps(item(1)), content_type="application/json", **extra)

    assert_error(batch, 401, "unauthorized")
    assert batch.json() == single.json()
    assert batch["WWW-Authenticate"] == single["WWW-Authenticate"] == 'Bearer realm="cakra"'
    store.assert_unchanged()


def test_a_revoked_key_is_refused(client, api_key):

    key, token = api_key
    apikey_revoke(prefix=key.prefix)
    assert_error(post_batch(client, token, {"violations": [item(1)]}), 401, "unauthorized")


def test_more_than_a_thousand_items_are_refused_whole(client, api_key, vehicle):
    _, token = api_key
    store = StoreSnapshot()
    body = {"violations": [item(n) for n in range(1001)]}

    error = assert_error(post_batch(client, token, body), 422, "validation_error", "violations")

    assert "1000" in error["message"]
    store.assert_unchanged()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"violations": []}, "violations"),
        ({}, "violations"),
        ({"violations": {"capture_id": "x"}}, "violations"),
        ({"violations": [], "extra": 1}, None),
        ([], "body"),
    ],
)
def test_a_wrong_envelope_is_refused_whole(client, api_key, body, field):
    _, token = api_key
    assert_error(post_batch(client, token, body), 422, "validation_error", field)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        '{"violations": [NaN]}',
        '{"violations": [], "violations": []}',
        b"\xff\xfe",
        '{"violations": []} trailing',
        "[" * 100_000 + "]" * 100_000,  # nesting bounded, not a crash
        '{"violations": [{"capture_id": "\\ud800"}]}',  # a lone surrogate is not text
        '{"violations": []}'.encode("utf-16"),  # JSON travels as UTF-8 (RFC 8259)
    ],
)
def test_a_body_that_is_not_strict_json_is_400(client, api_key, raw):
    _, token = api_key
    assert_error(post_batch(client, token, raw), 400, "malformed_json", "body")


def test_the_batch_cap_applies_to_the_batch_route_only(client, api_key, vehicle, settings):
    """The batch has its own cap; every other route keeps DATA_UPLOAD_MAX_MEMORY_SIZE."""
    _, token = api_key
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5_000
    settings.CAKRA_MAX_BATCH_BYTES = 20_000
    big_single = item(1, images=[("vehicle", jpeg_bytes(size=(320, 240)))] * 2)
    assert len(json.dumps(big_single)) > 5_000
    assert_error(post(client, token, big_single), 413, "request_too_large")

    fits = {"violations": [big_single]}
    assert len(json.dumps(fits)) < 20_000
    assert answered(post_batch(client, token, fits), 1)["created"] == 1

    store = StoreSnapshot()
    too_big = {"violations": [item(n, images=[("vehicle", jpeg_bytes(size=(320, 240)))] * 2) for n in range(2, 6)]}
    assert len(json.dumps(too_big)) > 20_000
    assert_error(post_batch(client, token, too_big), 413, "request_too_large", "body")
    store.assert_unchanged()


def test_other_methods_answer_json_405(client, api_key):
    _, token = api_key
    response = client.get(BATCH_URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_a_race_lost_on_the_unique_constraint_falls_back_per_item(client, api_key, vehicle, monkeypatch):
    """A concurrent sender commits a capture id between the look-up and the insert: the chunk is
    redone one by one, the lost capture answers as the winner's replay, the rest are stored, no
    file is left behind."""

    _, token = api_key
    winner = post(client, token, item("RACE"))
    assert winner.status_code == 201
    monkeypatch.setattr(intake, "_stored_by_capture_id", lambda **_: {})
    files_before = evidence_files()

    answer = answered(post_batch(client, token, {"violations": [item(1), item("RACE"), item(2), item(1)]}), 4)

    assert [r["status"] for r in answer["results"]] == [201, 200, 201, 200]
    assert answer["results"][1]["violation"] == winner.json()
    assert answer["results"][3]["violation"]["id"] == answer["results"][0]["violation"]["id"]
    assert Violation.objects.filter(capture_id__startswith="BATCH-").count() == 3
    stored_files = {Evidence.objects.get(violation__capture_id=c).original.path for c in ("BATCH-1", "BATCH-2")}
    assert {str(path) for path in evidence_files() - files_before} == stored_files


def test_a_failing_chunk_removes_its_files_and_answers_500(client, api_key, vehicle, monkeypatch):

    _, token = api_key
    store = StoreSnapshot()

    def audit_down(entries):
        raise RuntimeError("audit chain unavailable")

    monkeypatch.setattr(intake, "audit_events_record", audit_down)
    response = post_batch(client, token, {"violations": [item(1), item(2)]})

    assert_error(response, 500, "internal_error")
    store.assert_unchanged()


def _batch_body(start, count):
    return {"violations": [item(start + n) for n in range(count)]}


def test_query_count_does_not_grow_with_the_items(client, api_key, vehicle, django_assert_max_num_queries):
    """No N+1: articles, replays, registry matches, inserts and audit events are one statement per chunk."""

    _, token = api_key
    post_batch(client, token, _batch_body(0, 1))  # first use records last_used_at
    with CaptureQueriesContext(connection) as few:
        assert answered(post_batch(client, token, _batch_body(100, 10)), 10)["created"] == 10
    # rate-limit peek, key, the key's quota (savepoint pair, bucket update,
    # lease insert, lease delete), articles, replays, vehicles, 2 inserts,
    # savepoint pair, audit head update + insert (+ the head read under lock
    # when this thread's guess of the head is stale); no re-read: the answers
    # come from the inserts
    assert len(few.captured_queries) <= 17

    # 50 items (one chunk): the same statements (an insert may split into two on small backends).
    with django_assert_max_num_queries(len(few.captured_queries) + 2):
        assert answered(post_batch(client, token, _batch_body(200, 50)), 50)["created"] == 50


def test_pre_validated_query_count_does_not_grow_with_the_items(
    client, pre_validated_key, vehicle, django_assert_max_num_queries
):
    """With a pre-validated key, issuing the notices is per chunk too: nothing grows per item."""

    _, token = pre_validated_key
    post_batch(client, token, _batch_body(0, 1))
    with CaptureQueriesContext(connection) as one:
        assert answered(post_batch(client, token, _batch_body(100, 1)), 1)["created"] == 1
    with CaptureQueriesContext(connection) as eleven:
        assert answered(post_batch(client, token, _batch_body(200, 11)), 11)["created"] == 11
    # Rate-limit peek, key, the key's quota (savepoint pair, bucket update,
    # lease insert, lease delete), articles, replays, vehicles; the transaction;
    # violation and evidence inserts (inserted already validated: no UPDATE);
    # the notices (savepoint pair, insert); the delivery plans (contacts,
    # insert); two audit appends (the intake's, validations' and notices'
    # events in one, the plans' in the other) of two statements each, the
    # chain head moved by compare-and-set without being read first.
    assert len(eleven.captured_queries) == len(one.captured_queries)
    assert len(one.captured_queries) <= 23, "\n".join(query["sql"][:70] for query in one.captured_queries)


def test_the_batch_route_is_documented(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    operation = schema["paths"]["/api/v1/violations/batch"]["post"]
    assert operation["security"] == [{"ApiKeyAuth": []}]
    assert {"200", "400", "401", "413", "422", "429"} <= set(operation["responses"])
    components = schema["components"]["schemas"]
    for status in ("400", "401", "413", "422", "429"):
        ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorOut")
    assert operation["requestBody"]["required"] is True
    envelope = operation["requestBody"]["content"]["application/json"]["schema"]
    assert envelope["title"] == "ViolationBatchIn"
    violations = envelope["properties"]["violations"]
    assert (violations["minItems"], violations["maxItems"]) == (1, 1000)
    # A capture, or any other object (refused in its own result): nothing else.
    assert violations["items"]["anyOf"] == [{"$ref": "#/components/schemas/ViolationIn"}, {"type": "object"}]
    assert "ViolationIn" in components
    assert envelope["additionalProperties"] is False
    assert violations["description"]
    for name in ("ViolationBatchOut", "BatchItemResultOut"):
        for field, spec in components[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ViolationBatchOut")
    statuses = components["BatchItemResultOut"]["properties"]["status"]
    assert set(statuses["enum"]) == {200, 201, 409, 413, 415, 422}


def test_png_and_several_images_per_item_are_accepted(client, api_key, vehicle):
    _, token = api_key
    images = [("vehicle", SMALL_JPEG), ("plate", image_bytes("PNG")), ("context", SMALL_JPEG)]
    answer = answered(post_batch(client, token, {"violations": [item(1, images=images)]}), 1)
    assert answer["created"] == 1
    evidence = Evidence.objects.filter(violation__capture_id="BATCH-1").order_by("position")
    assert [(e.kind, e.content_type) for e in evidence] == [
        ("vehicle", "image/jpeg"),
        ("plate", "image/png"),
        ("context", "image/jpeg"),
    ]


@pytest.mark.django_db(transaction=True)
def test_two_senders_of_the_same_batch_store_each_capture_once(api_key, vehicle, celery_eager):
    """Concurrent requests (real transactions, a connection each): the unique constraint decides,
    the loser's items answer as replays, nobody deadlocks, no capture is stored twice. (Tasks run
    in-process: real commits enqueue the derivations, which must not reach a shared broker.)"""

    _, token = api_key
    body = json.dumps({"violations": [item(n) for n in range(12)]})
    answers = []
    start = threading.Barrier(2)

    def send():
        try:
            start.wait()
            response = Client().post(
                BATCH_URL, data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
            )
            answers.append(response)
        finally:
            connection.close()

    files_before = evidence_files()
    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [response.status_code for response in answers] == [200, 200]
    results = [response.json() for response in answers]
    assert sum(answer["created"] for answer in results) == 12
    assert sum(answer["replayed"] for answer in results) == 12
    for position in range(12):
        ids = {answer["results"][position]["violation"]["id"] for answer in results}
        assert len(ids) == 1
    assert Violation.objects.count() == 12
    # The loser's files were removed: only the stored evidence (and its derivatives) is on disk.
    evidence = list(Evidence.objects.all())
    assert len({row.original.path for row in evidence}) == 12
    expected = {row.original.path for row in evidence} | {row.derivative.path for row in evidence}
    assert {str(path) for path in evidence_files() - files_before} == expected
    assert not Evidence.objects.filter(derived_at__isnull=True).exists()
