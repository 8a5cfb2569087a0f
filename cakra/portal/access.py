"""Session grants: which notices this browser may see, and until when.

A correct notice number + plate pair grants the browser session access to that
one notice for ``CAKRA_PORTAL_GRANT_SECONDS``. Pages then address the notice by
its internal UUID, so neither the number nor the plate ever appears in a URL
(browser history, proxy logs, Referer). The grant lives only in the
server-side session: a copied link opens nothing on another device.
"""

from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.http import HttpRequest

GRANTS_KEY = "portal_grants"
# A citizen checks a handful of notices at most; the cap keeps a session small
# even if a script keeps granting itself notices (it is rate limited anyway).
MAX_GRANTS = 20


def _live_grants(request: HttpRequest, *, now: int) -> dict[str, int]:
    stored = request.session.get(GRANTS_KEY)
    if not isinstance(stored, dict):
        return {}
    return {
        key: expiry
        for key, expiry in stored.items()
        if isinstance(key, str) and isinstance(expiry, int) and expiry > now
    }


def grant_add(*, request: HttpRequest, notice_id: uuid.UUID) -> None:
    now = int(time.time())
    grants = _live_grants(request, now=now)
    # Session fixation: every grant is a privilege change, so the session
    # that holds it gets a fresh key nobody could have planted or read
    # before this lookup, also when it already held other grants.
    request.session.cycle_key()
    grants[str(notice_id)] = now + settings.CAKRA_PORTAL_GRANT_SECONDS
    newest = sorted(grants.items(), key=lambda item: item[1], reverse=True)[:MAX_GRANTS]
    request.session[GRANTS_KEY] = dict(newest)


def grant_is_live(*, request: HttpRequest, notice_id: uuid.UUID) -> bool:
    return str(notice_id) in _live_grants(request, now=int(time.time()))


def grants_clear(*, request: HttpRequest) -> None:
    """Forget every grant (the citizen is done, e.g. on a shared phone)."""
    request.session.flush()
