"""API keys: created (shown once), authenticated by hash, revoked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cakra.api.models import ApiKey
from cakra.audit.services import audit_event_record
from cakra.enforcement.errors import NotFoundError
from cakra.enforcement.models import Region
from cakra.security.crypto import constant_time_equals

TOKEN_PREFIX = "cakra"  # noqa: S105 - the public marker of a token, not a secret


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    token: str  # shown once, never stored


def _secret_hash(secret: str) -> str:
    # The secret carries 256 random bits: a fast hash is enough (no dictionary to try).
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def apikey_create(*, region_code: str, name: str, pre_validated: bool = False, actor: str = "cli") -> IssuedKey:
    try:
        region = Region.objects.get(code=region_code)
    except Region.DoesNotExist as exc:
        raise NotFoundError(f"no region with code {region_code!r}", field="region") from exc
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        region=region, name=name, prefix=prefix, secret_hash=_secret_hash(secret), pre_validated=pre_validated
    )
    audit_event_record(
        actor_type="system",
        actor_id=actor,
        action="apikey.created",
        object_type="apikey",
        object_id=prefix,
        region_code=region.code,
        data={"pre_validated": pre_validated},
    )
    return IssuedKey(key=key, token=f"{TOKEN_PREFIX}_{prefix}_{secret}")


@transaction.atomic
def apikey_revoke(*, prefix: str, actor: str = "cli") -> ApiKey:
    changed = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if changed != 1:
        raise NotFoundError("no active API key with that prefix", field="prefix")
    key = ApiKey.objects.select_related("region").get(prefix=prefix)
    audit_event_record(
        actor_type="system",
        actor_id=actor,
        action="apikey.revoked",
        object_type="apikey",
        object_id=prefix,
        region_code=key.region.code,
    )
    return key


def apikey_authenticate(*, token: str) -> ApiKey | None:
    """The active key for a presented token, or None (wrong, malformed, revoked alike)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:  # noqa: PLR2004
        return None
    key = ApiKey.objects.select_related("region").filter(prefix=parts[1], revoked_at__isnull=True).first()
    expected = key.secret_hash if key is not None else _secret_hash("absent")
    matches = constant_time_equals(_secret_hash(parts[2]), expected)
    if key is None or not matches:
        return None
    return key


def apikey_touch(*, key: ApiKey, resolution: timedelta) -> None:
    """Record that the key was used, at most once per ``resolution``.

    At hundreds of requests a second a write per request would serialise
    every intake on one row; the conditional update (no audit event: this is
    bookkeeping, not a change of what the key may do) keeps it cheap and
    race-free.
    """
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < resolution:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - resolution)
    ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
    key.last_used_at = now
