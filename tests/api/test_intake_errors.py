"""Bad input to POST /api/v1/violations: a clear 4xx naming the field, and nothing stored."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from cakra.enforcement.models import Violation
from tests.api.helpers import (
    PNG_SIGNATURE,
    StoreSnapshot,
    assert_error,
    b64,
    image_bytes,
    jpeg_bytes,
    jpeg_declaring,
    payload,
    png_bomb,
    post,
)

IMAGE_FIELD = "evidence[0].content_base64"


@pytest.fixture
def token(api_key, vehicle):
    return api_key[1]


@pytest.fixture
def store(token):
    return StoreSnapshot()


def test_malformed_json_is_400(client, token, store):
    response = post(client, token, '{"capture_id": "X-1", ')
    assert_error(response, 400, code="malformed_json", field="body")
    store.assert_unchanged()


@pytest.mark.parametrize(
    "raw",
    [
        '{"capture_id": "A", "capture_id": "B"}',  # duplicate keys: which one counts?
        '{"latitude": NaN}',  # not JSON
    ],
)
def test_ambiguous_or_non_standard_json_is_400(client, token, store, raw):
    assert_error(post(client, token, raw), 400, code="malformed_json")
    store.assert_unchanged()


def test_empty_body_is_422_naming_the_body(client, token, store):
    response = post(client, token, "")
    assert_error(response, 422, code="validation_error")
    store.assert_unchanged()


def test_json_that_is_not_an_object_is_422(client, token, store):
    assert_error(post(client, token, "[1, 2]"), 422, code="validation_error")
    store.assert_unchanged()


@pytest.mark.parametrize(
    "missing", ["capture_id", "camera_id", "captured_at", "location", "plate", "article", "evidence"]
)
def test_missing_field_is_422_naming_it(client, token, store, missing):
    body = payload()
    del body[missing]
    error = assert_error(post(client, token, body), 422, code="validation_error", field=missing)
    assert error["fields"][0]["code"] == "missing"
    store.assert_unchanged()


def test_extra_field_is_422_naming_it(client, token, store):
    error = assert_error(post(client, token, payload(owner_name="Budi")), 422, field="owner_name")
    assert error["fields"][0]["code"] == "extra_forbidden"
    store.assert_unchanged()


def test_extra_field_inside_an_evidence_item_is_422(client, token, store):
    body = payload()
    body["evidence"][0]["content_type"] = "image/jpeg"
    assert_error(post(client, token, body), 422, field="evidence[0].content_type")
    store.assert_unchanged()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capture_id", ""),
        ("capture_id", "x" * 65),
        ("capture_id", "CAP/../../etc"),
        ("capture_id", 12345),
        ("camera_id", "CAM 1"),
        ("location", ""),
        ("location", "x" * 201),
        ("location", "Jl. Sudirman\x00"),
        ("latitude", 48.85),  # Paris
        ("longitude", "106.8"),  # a string is not a number
        ("measured_speed_kmh", "92"),
        ("measured_speed_kmh", 92.5),
        ("measured_speed_kmh", True),
        ("speed_limit_kmh", -60),
        ("evidence", []),
        ("evidence", [{"kind": "vehicle", "content_base64": b64(jpeg_bytes())}] * 5),
        ("article", 287),
    ],
)
def test_bad_values_are_422_naming_the_field(client, token, store, field, value):
    assert_error(post(client, token, payload(**{field: value})), 422, code="validation_error", field=field)
    store.assert_unchanged()


@pytest.mark.parametrize("field", ["measured_speed_kmh", "speed_limit_kmh"])
def test_a_whole_number_written_with_a_fraction_is_an_integer(client, token, field):
    """JSON Schema's integer includes 92.0: a request the schema admits is not refused for it."""
    speeds = {"measured_speed_kmh": 92, "speed_limit_kmh": 60} | {field: 92.0}
    response = post(client, token, payload(article="287(5)", **speeds))
    assert response.status_code == 201, response.content
    assert Violation.objects.get(capture_id=response.json()["capture_id"]).measured_speed_kmh == 92


@pytest.mark.parametrize(("value", "code"), [("abc", "string_too_short"), ("QUJD", None), (4, "string_type")])
def test_evidence_text_shorter_than_one_base64_block_is_a_schema_error(client, token, store, value, code):
    """Checked without counting a photo's characters one by one; answered exactly as min_length would."""
    body = payload()
    body["evidence"][0]["content_base64"] = value
    response = post(client, token, body)
    if code is None:  # long enough for the schema: the image check refuses it
        assert_error(response, 415, code="unsupported_media_type", field=IMAGE_FIELD)
    else:
        assert_error(response, 422, code="validation_error", field=IMAGE_FIELD)
        assert response.json()["error"]["fields"][0]["code"] == code
    store.assert_unchanged()


def test_unknown_evidence_kind_is_422_naming_it(client, token, store):
    body = payload()
    body["evidence"][0]["kind"] = "selfie"
    assert_error(post(client, token, body), 422, field="evidence[0].kind")
    store.assert_unchanged()


def test_unknown_article_is_422_naming_it(client, token, store):
    assert_error(post(client, token, payload(article="999(9)")), 422, code="unknown_article", field="article")
    store.assert_unchanged()


@pytest.mark.parametrize("plate", ["", "1234 XYZ", "B 0123 XY", "B 12345 X", "<script>", "B 1234 XYZW"])
def test_malformed_plate_is_422_naming_it(client, token, store, plate):
    assert_error(post(client, token, payload(plate=plate)), 422, field="plate")
    store.assert_unchanged()


def test_malformed_plate_has_its_own_code(client, token, store):
    assert_error(post(client, token, payload(plate="1234 XYZ")), 422, code="invalid_plate", field="plate")


@pytest.mark.parametrize(
    "captured_at",
    [
        "2026-11-29T08:15:03",  # no offset
        "2026-11-29",  # a date is not a time
        "yesterday",
        1764378903,  # epoch seconds: the offset would be a guess
    ],
)
def test_captured_at_without_offset_or_unparseable_is_422(client, token, store, captured_at):
    assert_error(post(client, token, payload(captured_at=captured_at)), 422, field="captured_at")
    store.assert_unchanged()


def test_captured_at_in_the_future_is_422(client, token, store):
    future = timezone.localtime(timezone.now() + timedelta(minutes=10)).isoformat()
    error = assert_error(post(client, token, payload(captured_at=future)), 422, field="captured_at")
    assert error["fields"][0]["code"] == "datetime_future"
    store.assert_unchanged()


def test_captured_at_slightly_ahead_is_clock_skew_and_accepted(client, token):
    ahead = timezone.localtime(timezone.now() + timedelta(minutes=2)).isoformat()
    assert post(client, token, payload(captured_at=ahead)).status_code == 201


def test_captured_at_older_than_90_days_is_422(client, token, store):
    old = (timezone.now() - timedelta(days=91)).isoformat()
    error = assert_error(post(client, token, payload(captured_at=old)), 422, field="captured_at")
    assert error["fields"][0]["code"] == "datetime_too_old"
    store.assert_unchanged()


@pytest.mark.parametrize("text", ["not base64 at all!", "/9j/4AAQ\nSkZJRg==", "-_-_"])
def test_invalid_base64_is_422_naming_the_item(client, token, store, text):
    body = payload()
    body["evidence"][0]["content_base64"] = text
    assert_error(post(client, token, body), 422, code="invalid_base64", field=IMAGE_FIELD)
    store.assert_unchanged()


@pytest.mark.parametrize(
    "content",
    [
        b"just some text, not an image\n" * 10,
        b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",  # an HTML file renamed .jpg
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    ],
    ids=["text", "html", "pdf"],
)
def test_not_an_image_is_415_naming_the_item(client, token, store, content):
    response = post(client, token, payload(images=[("vehicle", content)]))
    assert_error(response, 415, code="unsupported_media_type", field=IMAGE_FIELD)
    store.assert_unchanged()


@pytest.mark.parametrize("image_format", ["GIF", "BMP", "WEBP", "TIFF"])
def test_other_image_formats_are_refused_415(client, token, store, image_format):
    response = post(client, token, payload(images=[("vehicle", image_bytes(image_format))]))
    assert_error(response, 415, code="unsupported_media_type", field=IMAGE_FIELD)
    store.assert_unchanged()


@pytest.mark.parametrize(
    "content",
    [
        PNG_SIGNATURE + b"\x00garbage that is no PNG chunk structure at all" * 20,
        image_bytes("PNG")[:-20],  # truncated PNG
        jpeg_bytes()[:2000],  # truncated JPEG
        b"\xff\xd8\xff\xe0" + b"\x00" * 200,  # JPEG magic, nothing behind it
        jpeg_declaring(0, 0),
    ],
    ids=["png-garbage", "png-truncated", "jpeg-truncated", "jpeg-magic-only", "jpeg-zero-size"],
)
def test_damaged_image_is_422_naming_the_item(client, token, store, content):
    response = post(client, token, payload(images=[("vehicle", content)]))
    assert_error(response, 422, code="invalid_image", field=IMAGE_FIELD)
    store.assert_unchanged()


def test_png_with_a_corrupted_chunk_checksum_is_422(client, token, store):
    data = bytearray(image_bytes("PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # flip a byte inside the compressed pixel data
    response = post(client, token, payload(images=[("vehicle", bytes(data))]))
    assert_error(response, 422, code="invalid_image", field=IMAGE_FIELD)
    store.assert_unchanged()


def test_oversized_image_is_413_naming_the_item(client, token, store, settings):
    settings.CAKRA_EVIDENCE_MAX_BYTES = 20_000
    big = jpeg_bytes(size=(1600, 1200)) + b"\x00" * 20_000
    assert len(big) > 20_000
    body = payload(images=[("vehicle", jpeg_bytes()), ("context", big)])
    assert_error(post(client, token, body), 413, code="image_too_large", field="evidence[1].content_base64")
    store.assert_unchanged()


def test_png_decompression_bomb_is_refused_from_its_header(client, token, store):
    bomb = png_bomb(30000)  # 900 megapixels declared, ~110 KB sent
    assert len(bomb) < 200_000
    response = post(client, token, payload(images=[("vehicle", bomb)]))
    error = assert_error(response, 422, code="image_dimensions_exceeded", field=IMAGE_FIELD)
    assert "30000x30000" in error["message"]
    store.assert_unchanged()


def test_jpeg_declaring_huge_dimensions_is_refused(client, token, store):
    response = post(client, token, payload(images=[("vehicle", jpeg_declaring(65000, 65000))]))
    assert_error(response, 422, code="image_dimensions_exceeded", field=IMAGE_FIELD)
    store.assert_unchanged()


def test_image_just_above_the_pixel_cap_is_refused(client, token, store, settings):
    settings.CAKRA_EVIDENCE_MAX_PIXELS = 640 * 480 - 1
    response = post(client, token, payload(images=[("vehicle", jpeg_bytes(size=(640, 480)))]))
    assert_error(response, 422, code="image_dimensions_exceeded", field=IMAGE_FIELD)
    store.assert_unchanged()


def test_one_bad_image_among_good_ones_stores_nothing(client, token, store):
    body = payload(images=[("vehicle", jpeg_bytes()), ("plate", jpeg_bytes()), ("context", b"GIF89a....")])
    assert_error(post(client, token, body), 415, field="evidence[2].content_base64")
    store.assert_unchanged()


def test_body_over_the_request_cap_is_413_json(client, token, store, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = payload(images=[("vehicle", jpeg_bytes(size=(1600, 1200)) + b"\x00" * 100_000)])
    raw = json.dumps(body)
    assert len(raw) > 64 * 1024
    assert_error(post(client, token, raw), 413, code="request_too_large", field="body")
    store.assert_unchanged()


def test_errors_never_echo_the_submitted_content(client, token):
    secret = "B 1234 XYZ <img src=x onerror=alert(1)>"
    response = post(client, token, payload(plate=secret, location="Jl. Rahasia 1"))
    assert response.status_code == 422
    assert b"onerror" not in response.content
    assert b"Rahasia" not in response.content
