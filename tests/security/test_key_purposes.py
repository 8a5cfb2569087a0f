"""One key per purpose: the audit chain and its anchors cannot be forged with
any key but their own, and never without a key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from cakra.audit.hashing import HASHED_FIELDS
from cakra.audit.models import AuditChainHead, AuditEvent
from cakra.audit.selectors import AnchorError, audit_anchor, audit_verify_anchor
from cakra.audit.services import audit_event_record
from cakra.security.crypto import audit_anchor_key, audit_chain_key, lookup_hash, purpose_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_purpose_keys() -> Iterator[None]:
    purpose_key.cache_clear()
    yield
    purpose_key.cache_clear()


def test_each_purpose_has_a_key_of_its_own():
    field_keys = [base64.b64decode(item.partition(":")[2]) for item in settings.CAKRA_FIELD_KEYS.split(",")]
    keys = [
        audit_chain_key(),
        audit_anchor_key(),
        base64.b64decode(settings.CAKRA_LOOKUP_KEY),
        base64.b64decode(settings.CAKRA_AUDIT_KEY),
        settings.SECRET_KEY.encode(),
        *field_keys,
    ]
    assert len(set(keys)) == len(keys)
    assert all(len(key) >= 32 for key in keys)


def _record_events(count: int) -> None:
    for n in range(count):
        with transaction.atomic():
            audit_event_record(
                actor_type="system", action="test.event", object_type="thing", object_id=str(n), data={"n": n}
            )


def _rewrite_chain(digest: Callable[[bytes], str]) -> None:
    """An attacker with write access to the database changes event 2 and
    recomputes every link after it with ``digest``, head row included."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER audit_event_no_update")
        else:
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    events = list(AuditEvent.objects.order_by("seq"))
    prev_hash = events[0].prev_hash
    for event in events:
        if event.seq == 2:
            event.action = "forged.event"
        fields = {name: getattr(event, name) for name in HASHED_FIELDS}
        fields["prev_hash"] = prev_hash
        fields["created_at"] = event.created_at.isoformat(timespec="microseconds")
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        new_hash = digest(text.encode())
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE audit_auditevent SET action = %s, prev_hash = %s, hash = %s WHERE chain = %s AND seq = %s",
                [event.action, prev_hash, new_hash, event.chain, event.seq],
            )
        prev_hash = new_hash
    AuditChainHead.objects.filter(chain=events[-1].chain).update(hash=prev_hash)


def test_a_chain_recomputed_with_the_unkeyed_hash_fails_verify():
    _record_events(4)
    call_command("audit", "verify")
    _rewrite_chain(lambda text: hashlib.sha256(text).hexdigest())
    with pytest.raises(CommandError, match="content does not match"):
        call_command("audit", "verify")


def test_a_chain_recomputed_under_another_purposes_key_fails_verify():
    _record_events(3)
    lookup_key = base64.b64decode(settings.CAKRA_LOOKUP_KEY)
    _rewrite_chain(lambda text: hmac.new(lookup_key, text, hashlib.sha256).hexdigest())
    with pytest.raises(CommandError, match="content does not match"):
        call_command("audit", "verify")


def test_a_chain_recomputed_with_its_own_key_verifies():
    """The control for the two attacks above: only the key makes the difference."""
    _record_events(3)
    _rewrite_chain(lambda text: hmac.new(audit_chain_key(), text, hashlib.sha256).hexdigest())
    call_command("audit", "verify")


def _canonical_anchor(anchor: dict[str, object]) -> str:
    return json.dumps(
        {"format": anchor["format"], "created_at": anchor["created_at"], "chains": anchor["chains"]}, sort_keys=True
    )


def test_the_anchor_verifies_only_under_the_anchor_key(settings):
    _record_events(2)
    anchor = audit_anchor()
    assert audit_verify_anchor(anchor).ok
    canonical = _canonical_anchor(anchor)
    forgeries = [
        lookup_hash(canonical, purpose="audit-anchor"),  # the lookup key, as anchors once were MAC'd
        hmac.new(audit_chain_key(), canonical.encode(), hashlib.sha256).hexdigest(),
        hashlib.sha256(canonical.encode()).hexdigest(),
    ]
    for mac in forgeries:
        with pytest.raises(AnchorError, match="MAC does not match"):
            audit_verify_anchor({**anchor, "mac": mac})
    # Under another audit key (another deployment, or after rotation) it is refused too.
    settings.CAKRA_AUDIT_KEY = base64.b64encode(b"k" * 32).decode()
    purpose_key.cache_clear()
    with pytest.raises(AnchorError, match="MAC does not match"):
        audit_verify_anchor(anchor)
