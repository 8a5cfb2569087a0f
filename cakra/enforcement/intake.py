"""Violation intake: one camera capture from a region's ETLE back office.

Idempotent on the camera's capture id. The same capture sent again with the
same content answers with the violation already stored; the same capture id
with different content is a conflict. The unique constraint on
``(region, capture_id)`` decides between concurrent senders, never a
check-then-act.

Nothing is partially stored: every image is inspected before any is written,
and files written for a transaction that fails are removed again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from cakra.audit.services import audit_record
from cakra.enforcement.errors import ConflictError, DomainError
from cakra.enforcement.evidence import (
    InspectedImage,
    evidence_delete_files,
    evidence_derive_enqueue_on_commit,
    evidence_file_name,
    evidence_inspect,
    evidence_store_originals_rollback_unsafe,
)
from cakra.enforcement.models import Article, Evidence, Violation
from cakra.enforcement.services import violation_validate_pre_validated
from cakra.registry.plates import InvalidPlateError, plate_normalise
from cakra.registry.selectors import vehicle_find_by_plate

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

    from cakra.api.models import ApiKey

logger = structlog.get_logger(__name__)

EVIDENCE_KINDS = ("vehicle", "plate", "context")


class UnknownArticleError(DomainError):
    code = "unknown_article"


class InvalidPlateInputError(DomainError):
    code = "invalid_plate"


@dataclass(frozen=True)
class EvidenceSubmission:
    kind: str
    content: bytes


@dataclass(frozen=True)
class ViolationSubmission:
    """One capture as the back office sent it, already checked for shape by the API schema."""

    capture_id: str
    camera_id: str
    captured_at: datetime
    location: str
    plate: str
    article_code: str
    evidence: tuple[EvidenceSubmission, ...]
    latitude: Decimal | None = None
    longitude: Decimal | None = None
    measured_speed_kmh: int | None = None
    speed_limit_kmh: int | None = None


@dataclass(frozen=True)
class IntakeResult:
    violation: Violation
    created: bool  # False: a replay of a capture already stored


def _payload_hash(*, submission: ViolationSubmission, plate: str, images: list[InspectedImage]) -> str:
    """SHA-256 of the canonical payload: what makes two submissions "the same capture".

    Normalised values only (plate spelling, timestamp offset and base64
    framing do not matter); images by their SHA-256.
    """
    canonical = {
        "capture_id": submission.capture_id,
        "camera_id": submission.camera_id,
        "captured_at": submission.captured_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "location": submission.location,
        "latitude": None if submission.latitude is None else str(submission.latitude),
        "longitude": None if submission.longitude is None else str(submission.longitude),
        "plate": plate,
        "article": submission.article_code,
        "measured_speed_kmh": submission.measured_speed_kmh,
        "speed_limit_kmh": submission.speed_limit_kmh,
        "evidence": [
            {"kind": item.kind, "sha256": image.sha256} for item, image in zip(submission.evidence, images, strict=True)
        ],
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _replay(*, region_id: int, capture_id: str, payload_hash: str) -> IntakeResult | None:
    existing = Violation.objects.filter(region_id=region_id, capture_id=capture_id).first()
    if existing is None:
        return None
    if existing.payload_hash != payload_hash:
        raise ConflictError("this capture_id was already received with different content", field="capture_id")
    return IntakeResult(violation=existing, created=False)


def violation_receive(*, api_key: ApiKey, submission: ViolationSubmission) -> IntakeResult:
    """Store one capture with its evidence, or answer with the one already stored.

    Owns its transaction: call it outside of one (files written for a
    transaction rolled back by an outer caller could not be removed).
    Raises EvidenceError, UnknownArticleError, InvalidPlateInputError or
    ConflictError, each naming the offending field.
    """
    if not 1 <= len(submission.evidence) <= 4:  # noqa: PLR2004 - the API contract: one to four images
        raise DomainError("one to four evidence images are required", field="evidence")
    for position, item in enumerate(submission.evidence):
        if item.kind not in EVIDENCE_KINDS:
            raise DomainError("unknown evidence kind", field=f"evidence[{position}].kind")
    # Every image is checked before anything is written.
    images = [
        evidence_inspect(content=item.content, field=f"evidence[{position}].content_base64")
        for position, item in enumerate(submission.evidence)
    ]
    try:
        plate = plate_normalise(submission.plate)
    except InvalidPlateError as exc:
        raise InvalidPlateInputError(str(exc), field="plate") from exc
    article = Article.objects.filter(code=submission.article_code).first()
    if article is None:
        raise UnknownArticleError("unknown article code (e.g. 287(1))", field="article")
    payload_hash = _payload_hash(submission=submission, plate=plate, images=images)
    region = api_key.region
    replay = _replay(region_id=region.pk, capture_id=submission.capture_id, payload_hash=payload_hash)
    if replay is not None:
        return replay

    vehicle = vehicle_find_by_plate(plate=plate)
    now = timezone.now()
    evidence_ids = [uuid.uuid4() for _ in images]
    names = evidence_store_originals_rollback_unsafe(
        files=[
            (
                evidence_file_name(
                    kind="original", region_id=region.pk, evidence_id=evidence_id, extension=image.extension, when=now
                ),
                image.content,
            )
            for evidence_id, image in zip(evidence_ids, images, strict=True)
        ]
    )
    try:
        with transaction.atomic():
            violation = _create_rows(
                api_key=api_key,
                submission=submission,
                plate=plate,
                article=article,
                vehicle_id=None if vehicle is None else vehicle.pk,
                payload_hash=payload_hash,
                evidence=list(zip(evidence_ids, names, images, strict=True)),
            )
    except IntegrityError:
        # A concurrent request with the same capture id committed first:
        # answer as its replay (or conflict), never with a second violation.
        evidence_delete_files(names=names)
        replay = _replay(region_id=region.pk, capture_id=submission.capture_id, payload_hash=payload_hash)
        if replay is None:
            raise
        return replay
    except BaseException:
        evidence_delete_files(names=names)
        raise
    logger.info(
        "violation.received",
        violation_id=str(violation.pk),
        region=region.code,
        registry_match=vehicle is not None,
        status=violation.status,
    )
    return IntakeResult(violation=violation, created=True)


def _create_rows(
    *,
    api_key: ApiKey,
    submission: ViolationSubmission,
    plate: str,
    article: Article,
    vehicle_id: uuid.UUID | None,
    payload_hash: str,
    evidence: list[tuple[uuid.UUID, str, InspectedImage]],
) -> Violation:
    """The writes of one intake, inside its transaction."""
    region = api_key.region
    violation = Violation.objects.create(
        region=region,
        capture_id=submission.capture_id,
        payload_hash=payload_hash,
        camera_id=submission.camera_id,
        captured_at=submission.captured_at,
        location=submission.location,
        latitude=submission.latitude,
        longitude=submission.longitude,
        plate=plate,
        plate_compact=plate.replace(" ", ""),
        article=article,
        measured_speed_kmh=submission.measured_speed_kmh,
        speed_limit_kmh=submission.speed_limit_kmh,
        vehicle_id=vehicle_id,
        source_key=api_key,
    )
    Evidence.objects.bulk_create(
        [
            Evidence(
                id=evidence_id,
                violation=violation,
                position=position,
                kind=item.kind,
                original=name,
                original_sha256=image.sha256,
                content_type=image.content_type,
                size_bytes=image.size_bytes,
                width=image.width,
                height=image.height,
            )
            for position, ((evidence_id, name, image), item) in enumerate(
                zip(evidence, submission.evidence, strict=True)
            )
        ]
    )
    audit_record(
        actor_type="api_key",
        actor_id=str(api_key.pk),
        action="violation.received",
        object_type="violation",
        object_id=str(violation.pk),
        region_code=region.code,
        data={
            "capture_id": submission.capture_id,
            "camera_id": submission.camera_id,
            "article": article.code,
            "registry_match": vehicle_id is not None,
            "payload_sha256": payload_hash,
            # Chain of custody: the audit chain vouches for the exact bytes received.
            "evidence_sha256": [image.sha256 for _, _, image in evidence],
        },
    )
    if api_key.pre_validated:
        violation_validate_pre_validated(violation=violation)
        violation.refresh_from_db()
    for evidence_id, _, _ in evidence:
        evidence_derive_enqueue_on_commit(evidence_id=evidence_id)
    return violation
