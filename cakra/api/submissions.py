"""From a checked API schema to the intake service's submission: one mapping for every way in.

The single route, the batch route and ``cakra import violations`` all build
their ``ViolationSubmission`` here, so the same capture sent any of these
ways has the same normalised values, hence the same payload hash: a CSV row
imported after the API already received it is a replay, not a conflict.
"""

from __future__ import annotations

from decimal import Decimal

from cakra.api.intake import EvidenceSubmission, ViolationSubmission
from cakra.api.schemas import ViolationFieldsIn, ViolationIn
from cakra.enforcement.evidence import evidence_decode_base64

COORDINATE_QUANTUM = Decimal("0.000001")


def _coordinate(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(COORDINATE_QUANTUM)


def submission_from_fields(
    *, fields: ViolationFieldsIn, evidence: tuple[EvidenceSubmission, ...]
) -> ViolationSubmission:
    return ViolationSubmission(
        capture_id=fields.capture_id,
        camera_id=fields.camera_id,
        captured_at=fields.captured_at,
        location=fields.location,
        latitude=_coordinate(fields.latitude),
        longitude=_coordinate(fields.longitude),
        plate=fields.plate,
        article_code=fields.article,
        measured_speed_kmh=fields.measured_speed_kmh,
        speed_limit_kmh=fields.speed_limit_kmh,
        evidence=evidence,
    )


def submission_from_api(payload: ViolationIn) -> ViolationSubmission:
    """Decode the evidence of an API item; raises EvidenceEncodingError naming ``evidence[i].content_base64``."""
    evidence = tuple(
        EvidenceSubmission(
            kind=item.kind,
            content=evidence_decode_base64(text=item.content_base64, field=f"evidence[{position}].content_base64"),
        )
        for position, item in enumerate(payload.evidence)
    )
    return submission_from_fields(fields=payload, evidence=evidence)
