"""Every refused access-control decision, logged as one event (ASVS V7.2.2).

``access.denied`` with ``surface`` (``api``, ``receipt_webhook``,
``backoffice``), ``reason`` (a class, never the presented credential), the
route *pattern* (paths carry notice numbers) and the method, plus ids only:
``officer_id`` or the ``api_key`` prefix when the caller is known, the kind
of object (and its id when it is an internal one) for a refused read. A
burst of these from one surface is what a tester's sweep, or an attacker's,
looks like in the logs.

Granted decisions that change something are audit events already
(cakra.audit); the refusals are logged, not audited: they change nothing,
and an anonymous client could otherwise fill the audit chain.
"""

from __future__ import annotations

import structlog
from django.http import HttpRequest

logger = structlog.get_logger("cakra.access")

EVENT = "access.denied"

type LoggedId = str | int | None


def access_denied_log(*, request: HttpRequest, surface: str, reason: str, **ids: LoggedId) -> None:
    """Log a refusal of ``request``; ``ids`` are identifiers only, never personal data or secrets."""
    route = request.resolver_match.route if request.resolver_match else ""
    fields = {name: value for name, value in ids.items() if value is not None}
    logger.warning(EVENT, surface=surface, reason=reason, route=route, method=request.method, **fields)
