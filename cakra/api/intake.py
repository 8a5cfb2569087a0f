"""Violation intake: camera captures from a region's ETLE back office, one or many at a time.

Idempotent on the camera's capture id. The same capture sent again with the
same content answers with the violation already stored; the same capture id
with different content is a conflict. The unique constraint on
``(region, capture_id)`` decides between concurrent senders, never a
check-then-act.

Nothing is partially stored: every image is inspected before any is written,
and files written for a transaction that fails are removed again.

Two entry points share every check and every write:

- ``violation_receive``: one capture (``POST /api/v1/violations``, the demo).
- ``violations_receive``: many captures (``POST /api/v1/violations/batch``,
  ``cakra import violations``). Each submission is answered on its own, as if
  the single route had been called for each in order, but the per-request
  costs are paid once per chunk: one query for the articles, one for the
  replays, one for the registry matches, one insert per table, and one
  transaction. What stays per violation is inherent to it: its evidence
  files, its audit events and, for a pre-validated key, its notice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import TYPE_CHECKING, cast

import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from cakra.audit.services import AuditEntry, audit_event_record, audit_events_record
from cakra.db import rows_insert, time_ordered_uuid
from cakra.delivery.services import notices_issue
from cakra.enforcement.derive_requests import evidence_derive_enqueue_on_commit
from cakra.enforcement.errors import ConflictError, DomainError
from cakra.enforcement.evidence import InspectedImage, evidence_inspect
from cakra.enforcement.models import Article, Evidence, Violation
from cakra.enforcement.services import violations_received_validated
from cakra.enforcement.storage import (
    evidence_delete_files,
    evidence_file_name,
    evidence_store_originals_rollback_unsafe,
)
from cakra.registry.models import Vehicle
from cakra.registry.plates import InvalidPlateError, plate_normalise
from cakra.registry.selectors import vehicle_find_by_plate

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

    from cakra.api.models import ApiKey

logger = structlog.get_logger(__name__)

EVIDENCE_KINDS = ("vehicle", "plate", "context")
MAX_EVIDENCE_ITEMS = 4
# Violations written per transaction by violations_receive. A chunk pays
# the fixed costs (look-ups, ~16 statements through the ORM, one directory
# flush, the commit's WAL flush: ~9 ms of CPU, measured) once for all its
# violations, while its decoded images sit in memory until its files are
# written and it holds its audit chain's head row until it commits (with a
# pre-validated key that includes issuing every notice of the chunk). 100
# (the back office's usual batch, one chunk) keeps a chunk to ~30 MB of
# 1080p photos, less than the batch's own JSON text, so the web process's
# peak memory did not move from 50, while the fixed costs per violation
# halved (web CPU per violation -15%). Callers that decode evidence lazily
# (the batch endpoint, the CSV import) decode one chunk at a time.
CHUNK_SIZE = 100

CONFLICT_MESSAGE = "this capture_id was already received with different content"


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


@dataclass(frozen=True)
class IntakeOutcome:
    """The answer to one submission of many: a result, or the error that refused it (nothing stored)."""

    result: IntakeResult | None = None
    error: DomainError | None = None


@dataclass(frozen=True)
class _Checked:
    """A submission that passed every check that needs no database but the article table."""

    submission: ViolationSubmission
    plate: str
    article: Article
    images: list[InspectedImage]
    payload_hash: str

    @property
    def capture_id(self) -> str:
        return self.submission.capture_id


@dataclass(frozen=True)
class _Planned:
    """A checked submission about to be written: its evidence ids and stored file names."""

    checked: _Checked
    vehicle_id: uuid.UUID | None
    owner_id: uuid.UUID | None
    evidence_ids: list[uuid.UUID]
    names: list[str]


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


def _articles(codes: Iterable[str]) -> dict[str, Article]:
    """The articles named by ``codes`` (a small reference table: one query for any number)."""
    return {article.code: article for article in Article.objects.filter(code__in=set(codes))}


def _check(*, submission: ViolationSubmission, articles: dict[str, Article]) -> _Checked:
    """Every check of one submission that needs no database; raise DomainError naming the field."""
    if not 1 <= len(submission.evidence) <= MAX_EVIDENCE_ITEMS:
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
    article = articles.get(submission.article_code)
    if article is None:
        raise UnknownArticleError("unknown article code (e.g. 287(1))", field="article")
    payload_hash = _payload_hash(submission=submission, plate=plate, images=images)
    return _Checked(submission=submission, plate=plate, article=article, images=images, payload_hash=payload_hash)


def _as_replay(*, existing: Violation, payload_hash: str) -> IntakeResult:
    """``existing`` answers a submission of the same capture id: a replay, or a conflict if the content differs."""
    if existing.payload_hash != payload_hash:
        raise ConflictError(CONFLICT_MESSAGE, field="capture_id")
    return IntakeResult(violation=existing, created=False)


def _replay(*, region_id: int, capture_id: str, payload_hash: str) -> IntakeResult | None:
    existing = Violation.objects.select_related("article").filter(region_id=region_id, capture_id=capture_id).first()
    if existing is None:
        return None
    return _as_replay(existing=existing, payload_hash=payload_hash)


def violation_receive(*, api_key: ApiKey, submission: ViolationSubmission) -> IntakeResult:
    """Store one capture with its evidence, or answer with the one already stored.

    Owns its transaction: call it outside of one (files written for a
    transaction rolled back by an outer caller could not be removed).
    Raises EvidenceError, UnknownArticleError, InvalidPlateInputError or
    ConflictError, each naming the offending field.
    """
    checked = _check(submission=submission, articles=_articles([submission.article_code]))
    return _receive_checked(api_key=api_key, checked=checked)


def _receive_checked(*, api_key: ApiKey, checked: _Checked) -> IntakeResult:
    """One checked capture: replay, or write files and rows in one transaction.

    The single route's path, and the batch's after a race lost on a chunk.
    """
    region = api_key.region
    replay = _replay(region_id=region.pk, capture_id=checked.capture_id, payload_hash=checked.payload_hash)
    if replay is not None:
        return replay
    vehicle = vehicle_find_by_plate(plate=checked.plate)
    match = None if vehicle is None else (vehicle.pk, vehicle.owner_id)
    planned = _store_files(region_id=region.pk, items=[(checked, match)])
    names = planned[0].names
    try:
        with transaction.atomic():
            (violation,) = _create_rows(api_key=api_key, planned=planned)
    except IntegrityError:
        # A concurrent request with the same capture id committed first:
        # answer as its replay (or conflict), never with a second violation.
        evidence_delete_files(names=names)
        replay = _replay(region_id=region.pk, capture_id=checked.capture_id, payload_hash=checked.payload_hash)
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
        registry_match=violation.vehicle_id is not None,
        status=violation.status,
    )
    return IntakeResult(violation=violation, created=True)


def violations_receive(*, api_key: ApiKey, submissions: Sequence[ViolationSubmission]) -> list[IntakeOutcome]:
    """Answer each submission as ``violation_receive`` would, in order; one outcome per submission.

    A refused submission (bad image, unknown article, conflict) stores
    nothing and never affects the others. Submissions repeating a capture id
    of an earlier one in the same call are its replay (or a conflict), never
    a second violation. Writes one transaction per ``CHUNK_SIZE``
    submissions; call it outside of a transaction. Failures that are not the
    submission's fault (database, storage) raise: the chunks committed
    before stay committed, and sending the same submissions again is safe
    (they come back as replays).
    """
    outcomes: list[IntakeOutcome] = []
    for start in range(0, len(submissions), CHUNK_SIZE):
        outcomes.extend(_receive_chunk(api_key=api_key, submissions=submissions[start : start + CHUNK_SIZE]))
    return outcomes


def _receive_chunk(*, api_key: ApiKey, submissions: Sequence[ViolationSubmission]) -> list[IntakeOutcome]:
    outcomes: dict[int, IntakeOutcome] = {}
    articles = _articles(submission.article_code for submission in submissions)
    checked: dict[int, _Checked] = {}
    for position, submission in enumerate(submissions):
        try:
            checked[position] = _check(submission=submission, articles=articles)
        except DomainError as exc:
            outcomes[position] = IntakeOutcome(error=exc)
    stored = _stored_by_capture_id(
        region_id=api_key.region.pk, capture_ids={item.capture_id for item in checked.values()}
    )
    creators: dict[str, int] = {}  # capture id -> position of the submission that creates it
    followers: list[int] = []  # repeats a capture id that an earlier submission of this chunk creates
    for position, item in checked.items():
        existing = stored.get(item.capture_id)
        if existing is not None:
            outcomes[position] = _replay_outcome(existing=existing, payload_hash=item.payload_hash)
        elif item.capture_id in creators:
            followers.append(position)
        else:
            creators[item.capture_id] = position
    if creators:
        outcomes.update(_receive_new(api_key=api_key, checked=checked, creators=creators, followers=followers))
    return [outcomes[position] for position in range(len(submissions))]


def _receive_new(
    *, api_key: ApiKey, checked: dict[int, _Checked], creators: dict[str, int], followers: list[int]
) -> dict[int, IntakeOutcome]:
    """Outcomes of the submissions of a chunk whose capture id is not stored yet, by position."""
    outcomes: dict[int, IntakeOutcome] = {}
    try:
        created = _create_many(api_key=api_key, items=[checked[position] for position in creators.values()])
    except IntegrityError:
        # A concurrent sender committed one of these capture ids after the
        # look-up (the whole chunk rolled back and its files are gone): redo
        # it one by one, where an insert that loses the race answers as the
        # winner's replay.
        logger.info("violation.batch_race_fallback", region=api_key.region.code, size=len(creators) + len(followers))
        for position in sorted([*creators.values(), *followers]):
            try:
                outcomes[position] = IntakeOutcome(result=_receive_checked(api_key=api_key, checked=checked[position]))
            except ConflictError as exc:
                outcomes[position] = IntakeOutcome(error=exc)
        return outcomes
    for capture_id, position in creators.items():
        outcomes[position] = IntakeOutcome(result=IntakeResult(violation=created[capture_id], created=True))
    for position in followers:
        item = checked[position]
        outcomes[position] = _replay_outcome(existing=created[item.capture_id], payload_hash=item.payload_hash)
    return outcomes


def _stored_by_capture_id(*, region_id: int, capture_ids: set[str]) -> dict[str, Violation]:
    """The region's violations with these capture ids, loaded as the status route loads them (one query)."""
    if not capture_ids:
        return {}
    violations = Violation.objects.select_related("article")
    if connection.vendor == "postgresql":
        # Asked as pairs, so that the unique (region, capture id) index
        # answers each one whatever the planner believes about the table: with
        # ``region_id = r AND capture_id IN (...)`` a table never analysed (as
        # on a server without autovacuum, or one filling faster than it runs)
        # was read through the region's index, every row of the region for
        # each chunk (measured: 19 ms at 100,000 violations, against 0.3).
        quote = connection.ops.quote_name
        table = quote(Violation._meta.db_table)  # noqa: SLF001 - Django's public model metadata
        region_column = quote(Violation._meta.get_field("region").column)  # noqa: SLF001
        capture_column = quote(cast("str", Violation._meta.get_field("capture_id").column))  # noqa: SLF001
        pairs = RawSQL(  # noqa: S611 - identifiers from the model, values as parameters
            f"({table}.{region_column}, {table}.{capture_column}) IN (SELECT %s, unnest(%s::text[]))",
            (region_id, sorted(capture_ids)),
            output_field=BooleanField(),
        )
        violations = violations.filter(pairs)
    else:
        violations = violations.filter(region_id=region_id, capture_id__in=capture_ids)
    return {violation.capture_id: violation for violation in violations}


def _replay_outcome(*, existing: Violation, payload_hash: str) -> IntakeOutcome:
    try:
        return IntakeOutcome(result=_as_replay(existing=existing, payload_hash=payload_hash))
    except ConflictError as exc:
        return IntakeOutcome(error=exc)


def _create_many(*, api_key: ApiKey, items: list[_Checked]) -> dict[str, Violation]:
    """Write the files and rows of new captures (distinct capture ids) in one transaction.

    Returns the stored violations by capture id, as the status route would
    load them (article already on them).
    Raises IntegrityError if a capture id was committed concurrently;
    nothing of the chunk is left.
    """
    region = api_key.region
    compact_plates = {item.plate.replace(" ", "") for item in items}
    matches = {
        compact: (vehicle_id, owner_id)
        for compact, vehicle_id, owner_id in Vehicle.objects.filter(plate_compact__in=compact_plates).values_list(
            "plate_compact", "id", "owner_id"
        )
    }
    planned = _store_files(
        region_id=region.pk, items=[(item, matches.get(item.plate.replace(" ", ""))) for item in items]
    )
    names = [name for plan in planned for name in plan.names]
    try:
        with transaction.atomic():
            violations = _create_rows(api_key=api_key, planned=planned)
    except BaseException:
        evidence_delete_files(names=names)
        raise
    # One line per chunk: each violation has its own audit event already.
    logger.info(
        "violation.received_many",
        region=region.code,
        received=len(violations),
        registry_match=sum(violation.vehicle_id is not None for violation in violations),
        validated=sum(violation.status == Violation.Status.VALIDATED for violation in violations),
    )
    return {violation.capture_id: violation for violation in violations}


def _store_files(*, region_id: int, items: list[tuple[_Checked, tuple[uuid.UUID, uuid.UUID] | None]]) -> list[_Planned]:
    """Write the originals of ``items`` (checked, (vehicle id, owner id) of
    the registry match); the caller removes them if its transaction fails."""
    now = timezone.now()
    plans = [(checked, match, [time_ordered_uuid() for _ in checked.images]) for checked, match in items]
    names = evidence_store_originals_rollback_unsafe(
        files=[
            (
                evidence_file_name(
                    kind="original", region_id=region_id, evidence_id=evidence_id, extension=image.extension, when=now
                ),
                image.content,
            )
            for checked, _, evidence_ids in plans
            for evidence_id, image in zip(evidence_ids, checked.images, strict=True)
        ]
    )
    planned: list[_Planned] = []
    offset = 0
    for checked, match, evidence_ids in plans:
        count = len(evidence_ids)
        planned.append(
            _Planned(
                checked=checked,
                vehicle_id=None if match is None else match[0],
                owner_id=None if match is None else match[1],
                evidence_ids=evidence_ids,
                names=names[offset : offset + count],
            )
        )
        offset += count
    return planned


def _create_rows(*, api_key: ApiKey, planned: list[_Planned]) -> list[Violation]:
    """The writes of new captures, inside the caller's transaction.

    With a pre-validated key, a capture with a registry match is inserted
    already validated and its notice issued at once; the others wait for an
    officer. Every insert comes before the first audit event (and the
    intake's events, the validations' and the notices' are one append): the
    audit chain's head row is then locked only for the audit events
    themselves, and a transaction that holds it never waits on another's
    uncommitted capture id (no lock cycle between concurrent senders of the
    same capture).

    The violations come back as the status route loads them (article
    cached), so answering costs no further query.
    """
    region = api_key.region
    decided_at = timezone.now()
    violations: list[Violation] = []
    for plan in planned:
        checked, submission = plan.checked, plan.checked.submission
        at_once = api_key.pre_validated and plan.vehicle_id is not None
        violations.append(
            Violation(
                region=region,
                capture_id=checked.capture_id,
                payload_hash=checked.payload_hash,
                camera_id=submission.camera_id,
                captured_at=submission.captured_at,
                location=submission.location,
                latitude=submission.latitude,
                longitude=submission.longitude,
                plate=checked.plate,
                plate_compact=checked.plate.replace(" ", ""),
                article=checked.article,
                measured_speed_kmh=submission.measured_speed_kmh,
                speed_limit_kmh=submission.speed_limit_kmh,
                vehicle_id=plan.vehicle_id,
                source_key=api_key,
                status=Violation.Status.VALIDATED if at_once else Violation.Status.RECEIVED,
                decided_at=decided_at if at_once else None,
                pre_validated=at_once,
            )
        )
    rows_insert(violations)
    rows_insert(
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
            for violation, plan in zip(violations, planned, strict=True)
            for position, (evidence_id, name, image, item) in enumerate(
                zip(plan.evidence_ids, plan.names, plan.checked.images, plan.checked.submission.evidence, strict=True)
            )
        ]
    )
    entries = [
        AuditEntry(
            actor_type="api_key",
            actor_id=str(api_key.pk),
            action="violation.received",
            object_type="violation",
            object_id=str(violation.pk),
            region_code=region.code,
            data={
                "capture_id": plan.checked.capture_id,
                "camera_id": plan.checked.submission.camera_id,
                "article": plan.checked.article.code,
                "registry_match": plan.vehicle_id is not None,
                "payload_sha256": plan.checked.payload_hash,
                # Chain of custody: the audit chain vouches for the exact bytes received.
                "evidence_sha256": [image.sha256 for image in plan.checked.images],
            },
        )
        for violation, plan in zip(violations, planned, strict=True)
    ]
    validated = [violation for violation in violations if violation.status == Violation.Status.VALIDATED]
    if validated:
        owners = {plan.vehicle_id: plan.owner_id for plan in planned if plan.vehicle_id and plan.owner_id}
        notices_issue(
            violations=validated,
            actor_type="api_key",
            actor_id=str(api_key.pk),
            owners=owners,
            audit_first=[*entries, *violations_received_validated(violations=validated)],
        )
    elif len(entries) == 1:
        audit_event_record(**asdict(entries[0]))  # the single route: the plain append of one event
    else:
        # A chunk: one lock of the chain head, one insert and one head update for all of them.
        audit_events_record(entries)
    for violation, plan in zip(violations, planned, strict=True):
        if violation.status == Violation.Status.VALIDATED:
            continue
        # Only captures an officer will review get their display copy now;
        # for notices issued at once a page view asks a worker for it
        # (evidence_derive_request): CPU per photo that most owners never open.
        for evidence_id in plan.evidence_ids:
            evidence_derive_enqueue_on_commit(evidence_id=evidence_id)
    return violations
