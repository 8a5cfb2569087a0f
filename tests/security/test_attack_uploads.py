"""Upload abuse through both intake routes (single and batch): HTML or script
hidden in or glued to an image, SVG, other formats behind a wrong magic,
decompression bombs declared in a header, oversized and non-canonical
base64. Each is a 4xx for its item, with no row and no file left behind;
a valid JPEG that carries markup inside is kept as evidence but never served:
officers and citizens only get the re-encoded derivative."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from django.conf import settings
from django.test import Client

from cakra.enforcement.evidence import evidence_derive
from cakra.enforcement.models import Evidence
from tests.api.helpers import PNG_SIGNATURE, StoreSnapshot, b64, jpeg_bytes, jpeg_declaring, payload
from tests.security.attack_world import english_client, sign_in, visit

HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose data is a few bytes: a bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


MALICIOUS = {
    "jpeg with html glued after its end": jpeg_bytes(size=(32, 32)) + HTML,
    "html behind a jpeg magic": b"\xff\xd8\xff\xe0" + HTML,
    "html behind a png magic": PNG_SIGNATURE + HTML,
    "plain html": HTML,
    "svg with script": SVG,
    "svg behind an xml declaration": b'<?xml version="1.0"?>' + SVG,
    "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF",
    "windows executable": b"MZ\x90\x00" + b"\x00" * 60,
    "zip": b"PK\x03\x04" + b"\x00" * 26,
    "png bomb header": _png_declaring(100_000, 100_000),
    "jpeg bomb header": jpeg_declaring(65_000, 65_000),
    "empty": b"",
}


def _posts(token: str):
    """Send one evidence text through the single route and the batch route."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def single(content_base64: str):
        body = payload(capture_id="UPLOAD-1", images=[])
        body["evidence"] = [{"kind": "vehicle", "content_base64": content_base64}]
        response = client.post("/api/v1/violations", data=json.dumps(body), content_type="application/json")
        return response.status_code

    def batch(content_base64: str):
        body = payload(capture_id="UPLOAD-2", images=[])
        body["evidence"] = [{"kind": "vehicle", "content_base64": content_base64}]
        response = client.post(
            "/api/v1/violations/batch", data=json.dumps({"violations": [body]}), content_type="application/json"
        )
        assert response.status_code == 200
        return response.json()["results"][0]["status"]

    return single, batch


@pytest.mark.parametrize("name", list(MALICIOUS))
def test_a_malicious_upload_is_a_4xx_and_stores_nothing(api_key, vehicle, name):
    _key, token = api_key
    store = StoreSnapshot()

    for send in _posts(token):
        status = send(b64(MALICIOUS[name]) if MALICIOUS[name] else "")
        assert 400 <= status < 500, (name, send.__name__, status)

    store.assert_unchanged()


@pytest.mark.parametrize(
    "text",
    [
        b64(jpeg_bytes(size=(16, 16))).replace("A", "-", 1) + "_",  # URL-safe alphabet
        " " + b64(jpeg_bytes(size=(16, 16))),
        b64(jpeg_bytes(size=(16, 16)))[:-2],  # padding cut
        "data:image/jpeg;base64," + b64(jpeg_bytes(size=(16, 16))),
        "\x00" * 8,
    ],
    ids=["url-safe", "leading-space", "no-padding", "data-uri", "nul"],
)
def test_non_canonical_base64_is_a_4xx_and_stores_nothing(api_key, vehicle, text):
    _key, token = api_key
    store = StoreSnapshot()

    for send in _posts(token):
        assert 400 <= send(text) < 500, send.__name__

    store.assert_unchanged()


def test_an_image_over_the_byte_cap_is_a_4xx_and_stores_nothing(api_key, vehicle, settings):
    settings.CAKRA_EVIDENCE_MAX_BYTES = 4096
    _key, token = api_key
    oversized = jpeg_bytes(size=(640, 480)) + b"\x00" * 4096
    store = StoreSnapshot()

    for send in _posts(token):
        assert send(b64(oversized)) == 413, send.__name__

    store.assert_unchanged()


def test_a_request_over_the_request_cap_is_refused_before_parsing(api_key, vehicle):
    _key, token = api_key
    store = StoreSnapshot()
    filler = "A" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024)

    response = Client(HTTP_AUTHORIZATION=f"Bearer {token}").post(
        "/api/v1/violations",
        data=json.dumps({"evidence": [{"content_base64": filler}]}),
        content_type="application/json",
    )

    assert response.status_code == 413
    store.assert_unchanged()


def test_markup_inside_a_valid_jpeg_is_kept_in_custody_but_never_served(api_key, officer, vehicle):
    _key, token = api_key
    polyglot = jpeg_bytes(size=(64, 48))
    polyglot = polyglot[:2] + b"\xff\xfe" + struct.pack(">H", len(HTML) + 2) + HTML + polyglot[2:]  # a COM segment
    body = payload(capture_id="UPLOAD-POLYGLOT", images=[("vehicle", polyglot)])

    response = Client(HTTP_AUTHORIZATION=f"Bearer {token}").post(
        "/api/v1/violations", data=json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 201  # a valid JPEG: the camera's original is evidence, byte for byte
    evidence = Evidence.objects.get()
    with evidence.original.open("rb") as handle:
        assert HTML in handle.read()
    assert evidence_derive(evidence_id=evidence.id)  # what the worker does after the commit
    served = visit(sign_in(english_client(), officer), "get", f"/backoffice/evidence/{evidence.id}/")
    assert served.status_code == 200
    assert served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert b"<script" not in served.content_bytes
    assert served.content_bytes.startswith(b"\xff\xd8")
