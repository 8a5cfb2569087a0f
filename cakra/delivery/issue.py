"""Issuing notices: the one way, for an officer's validation and a pre-validated key's intake alike.

A notice and its delivery plan are written in the transaction that
validates its violation: enforcement builds the notices (number,
verification code, fine, deadline), this layer plans their deliveries, and
the whole issue (the caller's events, the notices', the plans') is one
append to the audit chain, so the chain's head moves once per issue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from cakra.audit.services import AuditEntry
from cakra.delivery.services import delivery_plans_create
from cakra.enforcement.models import Notice, Violation
from cakra.enforcement.services import notices_create


def notices_issue(
    *,
    violations: Sequence[Violation],
    actor_type: str,
    actor_id: str,
    owners: Mapping[UUID, UUID] | None = None,
    audit_first: Sequence[AuditEntry] = (),
) -> list[Notice]:
    """Issue the notices of validated violations, with their delivery plans:
    one insert per table and one audit append for all of them, the first
    steps sent after commit. Call inside the validating transaction.

    ``owners`` (vehicle id -> owner id), when the caller already read them,
    saves a query. ``audit_first`` are the caller's own events of the same
    transaction (the violations received, validated): they go in the same
    append, before the notices'.
    """
    notices, issued = notices_create(violations=violations, actor_type=actor_type, actor_id=actor_id, owners=owners)
    delivery_plans_create(notices=notices, audit_first=[*audit_first, *issued])
    return notices
