"""Helpers for the API tests: synthetic images (Pillow, in memory), payloads, a
snapshot of everything an intake could store."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from PIL import ExifTags, Image, ImageCms, ImageDraw

from cakra.enforcement.models import Evidence, Violation

URL = "/api/v1/violations"
CAMERA_NOTE = b"camera operator note 7731"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def jpeg_bytes(*, size=(640, 480), colour=(120, 130, 140), with_metadata=False, orientation=1) -> bytes:
    """A JPEG; with_metadata adds EXIF (make, orientation, GPS), an ICC profile and a comment."""
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2, size[1] // 3), fill=(250, 250, 250))
    options: dict[str, object] = {"quality": 90}
    if with_metadata:
        exif = Image.Exif()
        exif[ExifTags.Base.Make] = "ETLE Camera Co"
        exif[ExifTags.Base.Orientation] = orientation
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSLatitudeRef] = "S"
        gps[ExifTags.GPS.GPSLatitude] = (6.0, 13.0, 28.0)
        gps[ExifTags.GPS.GPSLongitudeRef] = "E"
        gps[ExifTags.GPS.GPSLongitude] = (106.0, 48.0, 25.0)
        options["exif"] = exif
        options["comment"] = CAMERA_NOTE
        options["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def image_bytes(image_format: str, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, image_format)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side=30000) -> bytes:
    """A complete, valid 1-bit PNG of side x side pixels: ~110 KB on disk, ~112 MB decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_piece = 1000
    pieces = [compressor.compress(row * rows_per_piece) for _ in range(side // rows_per_piece)]
    pieces.append(compressor.compress(row * (side % rows_per_piece)))
    pieces.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(pieces)) + _png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(jpeg_bytes(size=(16, 16)))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def payload(
    *, capture_id="ETLE-MJ-0042:20261129T081503", plate="B 1234 XYZ", article="287(1)", images=None, **overrides
):
    captured_at = timezone.localtime(timezone.now() - timedelta(hours=2)).isoformat()
    body = {
        "capture_id": capture_id,
        "camera_id": "CAM-SUDIRMAN-03",
        "captured_at": captured_at,
        "location": "Jl. Jend. Sudirman (arah Blok M), Jakarta Selatan",
        "latitude": -6.224524,
        "longitude": 106.807145,
        "plate": plate,
        "article": article,
        "evidence": [
            {"kind": kind, "content_base64": b64(content)}
            for kind, content in (images if images is not None else [("vehicle", jpeg_bytes())])
        ],
    }
    body.update(overrides)
    return body


def post(client, token, body, **extra):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(URL, data=raw, content_type="application/json", **headers, **extra)


def get(client, token, path):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(f"/api/v1/{path}", **headers)


def evidence_files() -> set[Path]:
    root = Path(settings.EVIDENCE_ROOT)
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


class StoreSnapshot:
    """Violations, evidence rows and evidence files, before and after a request."""

    def __init__(self) -> None:
        self.before = self._take()

    @staticmethod
    def _take():
        return Violation.objects.count(), Evidence.objects.count(), evidence_files()

    def assert_unchanged(self) -> None:
        violations, evidence, files = self._take()
        assert (violations, evidence) == self.before[:2]
        assert files == self.before[2]


def assert_error(response, status, code=None, field=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "field", "fields"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error.get("field") == field or field in [item["field"] for item in error.get("fields", [])], error
    return error
