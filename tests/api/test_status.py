"""GET /api/v1/violations/{id} and /api/v1/notices/{number}: region-scoped, no enumeration oracle."""

from __future__ import annotations

import uuid

import pytest

from cakra.enforcement.models import Notice
from cakra.enforcement.numbers import notice_number_generate
from tests.api.helpers import assert_error, get, payload, post
from tests.factories import ApiKeyFactory


def test_violation_status(client, api_key, vehicle):
    _, token = api_key
    created = post(client, token, payload()).json()

    response = get(client, token, f"violations/{created['id']}")

    assert response.status_code == 200
    answer = response.json()
    assert answer == created
    assert set(answer) == {
        "id",
        "capture_id",
        "status",
        "plate",
        "article",
        "received_at",
    }


def test_other_regions_unknown_and_malformed_violation_ids_get_the_same_404(client, api_key, other_region, vehicle):
    _, token = api_key
    _, other_token = ApiKeyFactory.with_token(region=other_region)
    violation_id = post(client, token, payload()).json()["id"]

    answers = [
        get(client, other_token, f"violations/{violation_id}"),
        get(client, token, f"violations/{uuid.uuid4()}"),
        get(client, token, "violations/not-a-uuid"),
        get(client, token, "violations/1%20OR%201=1"),
    ]

    for response in answers:
        assert_error(response, 404, code="not_found")
    assert len({response.content for response in answers}) == 1


def test_notice_status_lists_deliveries_without_personal_data(
    client, pre_validated_key, vehicle, django_capture_on_commit_callbacks
):
    _, token = pre_validated_key
    with django_capture_on_commit_callbacks(execute=False):
        number = Notice.objects.get(violation_id=post(client, token, payload()).json()["id"]).number

    response = get(client, token, f"notices/{number}")

    assert response.status_code == 200
    notice = response.json()
    assert set(notice) == {
        "number",
        "status",
        "issued_at",
        "confirm_by",
        "fine_amount",
        "article",
        "deliveries",
        "timeline",
    }
    assert notice["number"] == number
    assert notice["fine_amount"] == 500000
    assert notice["article"] == "287(1)"
    assert notice["deliveries"][0]["step"] == 1
    assert set(notice["deliveries"][0]) == {"channel", "step", "status", "sent_at", "delivered_at"}
    owner = vehicle.owner
    for personal in (owner.name, owner.nik):
        assert personal not in response.content.decode()


def test_notice_number_may_be_written_with_spaces(
    client, pre_validated_key, vehicle, django_capture_on_commit_callbacks
):
    _, token = pre_validated_key
    with django_capture_on_commit_callbacks(execute=False):
        number = Notice.objects.get(violation_id=post(client, token, payload()).json()["id"]).number
    spaced = " ".join(number[i : i + 4] for i in range(0, 16, 4))
    assert get(client, token, f"notices/{spaced}").status_code == 200


def test_other_regions_and_unknown_notices_get_the_same_404(
    client, pre_validated_key, other_region, vehicle, django_capture_on_commit_callbacks
):
    _, token = pre_validated_key
    _, other_token = ApiKeyFactory.with_token(region=other_region)
    with django_capture_on_commit_callbacks(execute=False):
        number = Notice.objects.get(violation_id=post(client, token, payload()).json()["id"]).number

    answers = [
        get(client, other_token, f"notices/{number}"),
        get(client, token, f"notices/{notice_number_generate()}"),
        get(client, token, "notices/---"),
        get(client, token, "notices/%00"),
    ]

    for response in answers:
        assert_error(response, 404, code="not_found")
    assert len({response.content for response in answers}) == 1


def test_unknown_paths_and_methods_answer_json(client, api_key):
    _, token = api_key
    unknown = get(client, token, "no/such/endpoint")
    assert_error(unknown, 404, code="not_found")
    assert unknown.content == get(client, token, f"violations/{uuid.uuid4()}").content

    wrong_method = client.delete("/api/v1/violations", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(wrong_method, 405, code="method_not_allowed")
    assert wrong_method["Allow"] == "POST"
    assert_error(client.post("/api/v1/notices/1234"), 405, code="method_not_allowed")


# Every route of the API with exactly the methods its OpenAPI document declares.
DECLARED_METHODS = {
    "/api/v1/violations": "POST",
    "/api/v1/violations/batch": "POST",
    f"/api/v1/violations/{uuid.uuid4()}": "GET",
    "/api/v1/notices/1234567890123456": "GET",
    "/api/v1/receipts/email/smtp-sink": "POST",
    "/api/v1/openapi.json": "GET, HEAD",
}
OTHER_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "FOO"]


@pytest.mark.parametrize(("path", "declared"), DECLARED_METHODS.items())
def test_a_405_lists_exactly_the_methods_the_resource_declares(client, db, path, declared):
    for method in OTHER_METHODS:
        if method in declared.split(", "):
            continue
        response = client.generic(method, path)
        assert response.status_code == 405, (method, path)
        assert response["Allow"] == declared, (method, path)
        assert response["Content-Type"].startswith("application/json")
        if method != "HEAD":
            assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("method", OTHER_METHODS)
def test_an_unknown_path_is_a_404_whatever_the_method(client, db, method):
    response = client.generic(method, "/api/v1/no/such/endpoint")
    assert response.status_code == 404
    assert "Allow" not in response
