"""Evidence images: inspected at intake, stored untouched, shown only as a clean derivative.

Intake (``evidence_inspect``) runs for every camera capture, at up to
hundreds of requests a second, so it never decodes pixel data: it identifies
the format by its magic bytes (a declared type is never trusted), reads the
header with Pillow's JPEG or PNG parser only, refuses dimensions above a
pixel cap (decompression bombs) and checks the structure cheaply (JPEG end
marker, PNG chunk checksums). The original bytes are then kept exactly as
received, with their SHA-256, for the chain of custody: written straight to
the disk and flushed before the rows that point at them commit
(``cakra.enforcement.storage``).

What anyone is shown is the derivative (``evidence_derive``, run by a worker
after commit, asked for through ``cakra.enforcement.derive_requests``):
decoded, turned upright, converted to RGB, bounded to 1600 px and re-encoded
as a JPEG that carries no metadata at all: a camera's EXIF, GPS position,
ICC profile or comments never reach a citizen's browser.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import pybase64
import structlog
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin

from cakra.audit.services import audit_event_record
from cakra.enforcement.errors import DomainError
from cakra.enforcement.models import Evidence, Region, evidence_storage
from cakra.enforcement.storage import evidence_delete_files, evidence_file_name

logger = structlog.get_logger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

DERIVATIVE_MAX_SIDE = 1600
DERIVATIVE_QUALITY = 82
DERIVATIVE_CONTENT_TYPE = "image/jpeg"

# Pillow raises many exception types on hostile input; every one of them
# means "not a valid image" here. (SyntaxError is how Pillow's parsers say
# "not my format"; struct.error comes from truncated headers.)
_PARSE_ERRORS = (SyntaxError, OSError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)


class EvidenceError(DomainError):
    """An evidence item was refused; ``status`` is the HTTP status the API answers with."""

    code = "invalid_image"
    status = 422


class EvidenceEncodingError(EvidenceError):
    code = "invalid_base64"


class EvidenceTooLargeError(EvidenceError):
    code = "image_too_large"
    status = 413


class EvidenceDimensionsError(EvidenceError):
    code = "image_dimensions_exceeded"
    status = 422


class EvidenceUnsupportedTypeError(EvidenceError):
    code = "unsupported_media_type"
    status = 415


class EvidenceIntegrityError(Exception):
    """A stored original no longer matches its recorded SHA-256."""


@dataclass(frozen=True)
class _Format:
    name: str
    content_type: str
    extension: str
    parser: type[ImageFile.ImageFile]


JPEG = _Format("JPEG", "image/jpeg", "jpg", JpegImagePlugin.JpegImageFile)
PNG = _Format("PNG", "image/png", "png", PngImagePlugin.PngImageFile)


@dataclass(frozen=True)
class InspectedImage:
    """An image that passed intake checks, with everything its Evidence row records."""

    content: bytes
    sha256: str
    content_type: str
    extension: str
    width: int
    height: int

    @property
    def size_bytes(self) -> int:
        return len(self.content)


def evidence_decode_base64(*, text: str, field: str) -> bytes:
    """Strict base64 (no whitespace, no URL alphabet): anything else is refused."""
    try:
        # pybase64 (SIMD): many times faster than the standard library on a
        # photo (docs/performance.md, "Measured choices"); same strict alphabet. It
        # reads the str itself (any character outside the alphabet, ASCII or
        # not, is refused), so no ASCII copy of the text is made first.
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceEncodingError("the image is not valid base64", field=field) from exc


def _sniff(content: bytes, *, field: str) -> _Format:
    if content.startswith(JPEG_MAGIC):
        return JPEG
    if content.startswith(PNG_MAGIC):
        return PNG
    raise EvidenceUnsupportedTypeError("the image must be a JPEG or PNG file", field=field)


def _open_header(content: bytes, image_format: _Format, *, field: str) -> ImageFile.ImageFile:
    """Parse the header with exactly one Pillow plugin; no pixel data is decoded.

    The plugin class is called directly instead of ``Image.open``: no other
    format's parser ever sees the bytes, and Pillow's own decompression-bomb
    check (a process-global warning) is replaced by the explicit cap below,
    which is thread-safe and lower.
    """
    try:
        image = image_format.parser(io.BytesIO(content))
    except _PARSE_ERRORS as exc:
        raise EvidenceError("the image is damaged or not a valid JPEG/PNG file", field=field) from exc
    width, height = image.size
    if width * height > settings.CAKRA_EVIDENCE_MAX_PIXELS:
        image.close()
        raise EvidenceDimensionsError(
            f"the image declares {width}x{height} pixels; at most {settings.CAKRA_EVIDENCE_MAX_PIXELS} are accepted",
            field=field,
        )
    return image


def evidence_inspect(*, content: bytes, field: str) -> InspectedImage:
    """Check one evidence image without decoding its pixels; raise EvidenceError naming ``field``."""
    max_bytes = settings.CAKRA_EVIDENCE_MAX_BYTES
    if len(content) > max_bytes:
        raise EvidenceTooLargeError(f"the image is larger than {max_bytes} bytes", field=field)
    image_format = _sniff(content, field=field)
    image = _open_header(content, image_format, field=field)
    try:
        width, height = image.size
        if image_format is PNG:
            # Walks every chunk and checks its CRC without inflating the pixel
            # data: catches truncation and "PNG header followed by garbage".
            image.verify()
        elif not content.rstrip(b"\x00").endswith(JPEG_END):
            # A truncated upload (or a header glued to something else) has no
            # end-of-image marker; cameras pad with zero bytes at most.
            raise EvidenceError("the JPEG image is truncated", field=field)
    except _PARSE_ERRORS as exc:
        raise EvidenceError("the image is damaged or not a valid JPEG/PNG file", field=field) from exc
    finally:
        image.close()
    return InspectedImage(
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        content_type=image_format.content_type,
        extension=image_format.extension,
        width=width,
        height=height,
    )


class EvidenceDecodeError(Exception):
    """The original could not be decoded into a derivative (permanent: retrying will not help)."""


def _render_derivative(content: bytes) -> bytes:
    image_format = _sniff(content, field="original")
    image = _open_header(content, image_format, field="original")
    try:
        with image:
            if image_format is JPEG:
                # DCT scaling: decode at the smallest scale still >= the
                # target, several times cheaper than a full decode.
                image.draft("RGB", (DERIVATIVE_MAX_SIDE, DERIVATIVE_MAX_SIDE))
            image.load()
            try:
                upright = ImageOps.exif_transpose(image)
            except _PARSE_ERRORS:
                # A camera's broken EXIF must not cost the picture: keep it as stored.
                logger.warning("evidence.exif_orientation_unreadable")
                upright = image.copy()
            rgb = upright.convert("RGB")
            rgb.thumbnail((DERIVATIVE_MAX_SIDE, DERIVATIVE_MAX_SIDE), Image.Resampling.LANCZOS)
            # Pillow carries some metadata over from ``info`` (comments, for
            # one): start from an empty one so nothing but pixels is written.
            rgb.info = {}
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=DERIVATIVE_QUALITY, optimize=True)
            return out.getvalue()
    except (*_PARSE_ERRORS, EvidenceError) as exc:
        raise EvidenceDecodeError(str(exc)) from exc


# Decoding attempts per image, counting every sweep and retry: an original
# that does not decode this many times is marked failed and left for an
# officer instead of costing a worker's CPU on every sweep forever.
DERIVE_MAX_ATTEMPTS = 3


def _render_checked_derivative(*, evidence: Evidence, content: bytes) -> bytes:
    if hashlib.sha256(content).hexdigest() != evidence.original_sha256:
        logger.error("evidence.original_hash_mismatch", evidence_id=str(evidence.id))
        raise EvidenceIntegrityError(f"evidence {evidence.id}: stored original does not match its SHA-256")
    return _render_derivative(content)


def evidence_derive(*, evidence_id: UUID | str) -> bool:
    """Produce the shown derivative of one evidence image; True if this call stored it.

    Runs in workers only (``evidence_derive_task``): a web request never
    decodes an image. Idempotent: an image already derived or marked failed
    is left alone, and if two workers race, the conditional update lets
    exactly one of them record its file (the other removes its own). The
    original's SHA-256 is checked first: a changed original is never turned
    into something shown to citizens. Each decode is counted on the row
    before it starts (``evidence_derive_attempt_claim``); a failure is
    recorded, and the last allowed one marks the image failed.
    """
    evidence = Evidence.objects.select_related("violation__region").filter(pk=evidence_id).first()
    if evidence is None or evidence.derived_at is not None or evidence.derive_failed_at is not None:
        return False
    with evidence.original.open("rb") as handle:
        content = handle.read()
    if not evidence_derive_attempt_claim(evidence=evidence):
        return False
    try:
        derivative = _render_checked_derivative(evidence=evidence, content=content)
    except (EvidenceDecodeError, EvidenceIntegrityError) as exc:
        evidence_derive_failure_record(evidence=evidence, error=type(exc).__name__)
        raise
    digest = hashlib.sha256(derivative).hexdigest()
    region = evidence.violation.region
    name = evidence_file_name(
        kind="derivative",
        region_id=region.pk,
        evidence_id=evidence.pk,
        extension="jpg",
        when=evidence.violation.received_at,
    )
    storage = evidence_storage()
    saved = storage.save(name, ContentFile(derivative))
    try:
        with transaction.atomic():
            changed = Evidence.objects.filter(pk=evidence.pk, derived_at__isnull=True).update(
                derivative=saved, derivative_sha256=digest, derived_at=timezone.now(), derive_last_error=""
            )
            if changed:
                audit_event_record(
                    actor_type="system",
                    action="evidence.derived",
                    object_type="evidence",
                    object_id=str(evidence.pk),
                    region_code=region.code,
                    data={
                        "violation": str(evidence.violation_id),
                        "original_sha256": evidence.original_sha256,
                        "derivative_sha256": digest,
                    },
                )
    except BaseException:
        evidence_delete_files(names=[saved])
        raise
    if not changed:
        evidence_delete_files(names=[saved])
        return False
    logger.info("evidence.derived", evidence_id=str(evidence.pk))
    return True


def evidence_derive_attempt_claim(*, evidence: Evidence) -> bool:
    """Count one decoding attempt before it starts; False when none is left.

    Counted first, in its own committed update, so that an attempt which
    never returns (the worker killed by the image, a time limit) is counted
    too. Reaching the limit this way marks the image failed without trying.
    """
    claimed = Evidence.objects.filter(
        pk=evidence.pk,
        derived_at__isnull=True,
        derive_failed_at__isnull=True,
        derive_attempts__lt=DERIVE_MAX_ATTEMPTS,
    ).update(derive_attempts=F("derive_attempts") + 1)
    if claimed:
        return True
    evidence_derive_failure_record(evidence=evidence, error=None)
    return False


def evidence_derive_failure_record(*, evidence: Evidence, error: str | None) -> None:
    """Record why a decoding attempt failed (``error``, if there is a new one);
    once no attempt is left, mark the image failed.

    Marked failed (once, with an audit event) the image is no longer picked
    up by sweeps or page views: an officer sees it without a picture and
    decides from the original kept for the chain of custody.
    """
    region = evidence.violation.region
    with transaction.atomic():
        if error is not None:
            Evidence.objects.filter(pk=evidence.pk, derived_at__isnull=True).update(derive_last_error=error[:64])
        last_error = error or evidence.derive_last_error or "unknown"
        marked = Evidence.objects.filter(
            pk=evidence.pk,
            derived_at__isnull=True,
            derive_failed_at__isnull=True,
            derive_attempts__gte=DERIVE_MAX_ATTEMPTS,
        ).update(derive_failed_at=timezone.now())
        if marked:
            audit_event_record(
                actor_type="system",
                action="evidence.derive_failed",
                object_type="evidence",
                object_id=str(evidence.pk),
                region_code=region.code,
                data={
                    "violation": str(evidence.violation_id),
                    "error": last_error[:64],
                    "attempts": DERIVE_MAX_ATTEMPTS,
                },
            )
    logger.warning(
        "evidence.derive_attempt_failed", evidence_id=str(evidence.pk), error=last_error, failed=bool(marked)
    )


# --- Orphaned files ----------------------------------------------------------------
# Originals are written (and flushed) before the transaction that records
# them commits, and a derivative before the update that records it: a
# process killed in between (SIGKILL, power cut) leaves a file no row points
# at. Those are photographs of vehicles and people kept for no purpose (UU
# PDP: data minimisation), so a scheduled sweep removes them.
ORPHAN_KINDS = ("original", "derivative")
# Far longer than any request or task that writes evidence can run (the web
# server's and the worker's time limits are minutes): a younger file may
# belong to a transaction still open.
ORPHAN_MIN_AGE = timedelta(hours=1)
# Dated folders swept each run: an orphan is left in the folder of the day
# its request or task ran (a derivative: the day its violation was received,
# usually the same day). Older folders were swept on earlier days.
ORPHAN_DAYS = 2
_ORPHAN_QUERY_CHUNK = 1000
_ORPHAN_AUDIT_NAMES = 100


def evidence_orphans_sweep(*, now: datetime | None = None, days: int = ORPHAN_DAYS) -> int:
    """Remove evidence files that no evidence row references, older than
    ``ORPHAN_MIN_AGE``, in the dated folders of the last ``days`` days of
    every region. One audit event per folder with orphans (ids only: file
    names are ``<evidence id>.<ext>``), recorded before the files are
    removed. Returns how many files were removed. Idempotent, bounded by
    the folders' sizes."""
    now = now or timezone.now()
    storage = evidence_storage()
    removed = 0
    for region_id, region_code in Region.objects.values_list("pk", "code"):
        for offset in range(days + 1):
            day = timezone.localtime(now - timedelta(days=offset))
            for kind in ORPHAN_KINDS:
                folder = f"{kind}/{region_id}/{day:%Y/%m/%d}"
                orphans = _folder_orphans(storage, folder=folder, kind=kind, older_than=now - ORPHAN_MIN_AGE)
                if not orphans:
                    continue
                with transaction.atomic():
                    audit_event_record(
                        actor_type="system",
                        action="evidence.orphans_removed",
                        object_type="evidence_folder",
                        object_id=folder,
                        region_code=region_code,
                        data={
                            "count": len(orphans),
                            "files": [n.rpartition("/")[2] for n in orphans][:_ORPHAN_AUDIT_NAMES],
                        },
                    )
                evidence_delete_files(names=orphans)
                removed += len(orphans)
                logger.info("evidence.orphans_removed", folder=folder, count=len(orphans))
    return removed


def _folder_orphans(storage: Storage, *, folder: str, kind: str, older_than: datetime) -> list[str]:
    try:
        _folders, files = storage.listdir(folder)
    except FileNotFoundError:
        return []
    candidates = [f"{folder}/{name}" for name in files if storage.get_modified_time(f"{folder}/{name}") < older_than]
    column = "original" if kind == "original" else "derivative"
    referenced: set[str] = set()
    for start in range(0, len(candidates), _ORPHAN_QUERY_CHUNK):
        chunk = candidates[start : start + _ORPHAN_QUERY_CHUNK]
        referenced.update(Evidence.objects.filter(**{f"{column}__in": chunk}).values_list(column, flat=True))
    return [name for name in candidates if name not in referenced]
