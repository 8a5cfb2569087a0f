"""The audit trail is append-only and hash-chained; `cakra audit verify` finds tampering."""

from __future__ import annotations

import itertools
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from cakra.audit import services
from cakra.audit.hashing import HASHED_FIELDS
from cakra.audit.models import AuditChainHead, AuditEvent
from cakra.audit.selectors import AnchorError, audit_anchor, audit_verify_anchor, audit_verify_chain
from cakra.audit.services import AuditEntry, audit_chain_of_this_process, audit_event_record, audit_events_record

pytestmark = pytest.mark.django_db


def _record_events(count: int) -> None:
    for n in range(count):
        with transaction.atomic():
            audit_event_record(
                actor_type="system",
                action="test.event",
                object_type="thing",
                object_id=str(n),
                data={"n": n, "note": "ünïcode"},
            )


def _disable_triggers() -> None:
    """What an attacker with DDL rights could do first."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER audit_event_no_update")
            cursor.execute("DROP TRIGGER audit_event_no_delete")
        else:
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")


def test_verify_passes_on_an_intact_chain(capsys):
    _record_events(5)
    call_command("audit", "verify")
    assert "audit chain OK: 5 events verified" in capsys.readouterr().out


def test_events_link_to_their_predecessor():
    _record_events(3)
    first, second, third = AuditEvent.objects.order_by("seq")
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash


@pytest.mark.django_db(transaction=True)
def test_audit_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError):
        audit_event_record(actor_type="system", action="x", object_type="y", object_id="1")


def test_the_application_cannot_change_or_delete_an_event():
    _record_events(1)
    event = AuditEvent.objects.get()
    event.action = "forged"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()


def test_the_database_refuses_update_and_delete():
    _record_events(1)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.update(action="forged")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().action == "test.event"


def test_verify_fails_on_a_tampered_row_and_names_it():
    _record_events(5)
    _disable_triggers()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET object_id = %s WHERE seq = %s", ["tampered", 3])
    report = audit_verify_chain()
    assert not report.ok
    assert report.broken_seq == 3
    assert report.checked == 2
    with pytest.raises(CommandError, match=r"BROKEN at event #3"):
        call_command("audit", "verify")


def test_verify_fails_when_a_row_is_deleted():
    _record_events(4)
    _disable_triggers()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = %s", [2])
    report = audit_verify_chain()
    assert not report.ok
    assert report.broken_seq == 2
    assert "missing" in report.reason


def test_verify_fails_when_the_newest_rows_are_cut_off():
    _record_events(4)
    _disable_triggers()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = %s", [4])
    report = audit_verify_chain()
    assert not report.ok
    assert report.broken_seq == 4


def test_verify_fails_when_a_hash_is_recomputed_without_relinking():
    """Rewriting one event and its own hash still breaks the next link."""
    _record_events(3)
    _disable_triggers()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE seq = %s", ["f" * 64, 2])
    report = audit_verify_chain()
    assert not report.ok
    assert report.broken_seq == 2


def test_each_writer_process_appends_to_its_own_chain_and_all_verify(monkeypatch):

    for chain in (0, 5, 5, 11, 0):
        monkeypatch.setattr(services, "audit_chain_of_this_process", lambda chain=chain: chain)
        _record_events(2)
    assert sorted(set(AuditEvent.objects.values_list("chain", flat=True))) == [0, 5, 11]
    assert list(AuditEvent.objects.filter(chain=5).values_list("seq", flat=True)) == [1, 2, 3, 4]
    report = audit_verify_chain()
    assert report.ok
    assert report.checked == 10


def test_a_broken_link_names_its_chain(monkeypatch):

    for chain in (3, 7):
        monkeypatch.setattr(services, "audit_chain_of_this_process", lambda chain=chain: chain)
        _record_events(3)
    _disable_triggers()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = %s WHERE chain = %s AND seq = %s", ["forged", 7, 2])
    report = audit_verify_chain()
    assert (report.ok, report.broken_chain, report.broken_seq) == (False, 7, 2)
    with pytest.raises(CommandError, match=r"#2 of chain 7"):
        call_command("audit", "verify")


def test_a_batch_of_events_is_one_linked_run():

    with transaction.atomic():
        events = audit_events_record(
            [AuditEntry(actor_type="system", action="batch", object_type="thing", object_id=str(n)) for n in range(4)]
        )
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    assert audit_verify_chain().ok


def _append(n: int) -> None:
    with transaction.atomic():
        audit_event_record(actor_type="system", action="test.event", object_type="thing", object_id=str(n))


def test_a_writer_that_knows_the_head_moves_it_without_reading_it():
    """The usual append (a process on its own chain): one head update and one insert."""

    _append(1)
    with CaptureQueriesContext(connection) as queries:
        _append(2)
    statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
    assert [s for s in statements if s not in {"SAVEPOINT", "RELEASE"}] == ["UPDATE", "INSERT"]
    assert audit_verify_chain().ok


def test_an_append_rolled_back_leaves_no_gap():
    """The writer's guess of the head was ahead of the database: the head is read again, under lock."""

    def failing_change() -> None:
        with transaction.atomic():
            audit_event_record(actor_type="system", action="test.event", object_type="thing", object_id="lost")
            raise RuntimeError("the change being recorded failed")

    _append(1)
    with pytest.raises(RuntimeError):
        failing_change()
    _append(3)
    assert list(AuditEvent.objects.values_list("seq", "object_id")) == [(1, "1"), (2, "3")]
    assert audit_verify_chain().ok


def test_another_writer_on_the_same_chain_is_never_overwritten():
    """Two processes whose pids share a chain: each one's guess of the head goes stale when the other appends."""

    _append(1)
    my_guess = dict(services._known_heads.heads)
    _append(2)  # the other process
    services._known_heads.heads.clear()
    services._known_heads.heads.update(my_guess)

    _append(3)

    events = list(AuditEvent.objects.order_by("seq"))
    assert [(e.seq, e.object_id) for e in events] == [(1, "1"), (2, "2"), (3, "3")]
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    assert audit_verify_chain().ok


def test_returned_events_are_the_stored_rows():

    with transaction.atomic():
        events = audit_events_record(
            [
                AuditEntry(actor_type="system", action="batch", object_type="thing", object_id=str(n), data={"n": n})
                for n in range(3)
            ]
        )
    stored = {event.pk: event for event in AuditEvent.objects.all()}
    assert all(event.pk is not None and not event._state.adding for event in events)
    for event in events:
        row = stored[event.pk]
        assert (row.seq, row.hash, row.prev_hash, row.created_at, row.data) == (
            event.seq,
            event.hash,
            event.prev_hash,
            event.created_at,
            event.data,
        )
    with pytest.raises(PermissionError):
        events[0].save()


# --- Anchors: the newest events cannot be cut off unnoticed ------------------------


def _cut_off_newest_and_rewrite_the_head(keep: int) -> None:
    """What an attacker with write access to the database could do: remove the
    newest events and make the head row agree, so the chain alone looks intact."""

    _disable_triggers()
    chain = audit_chain_of_this_process()  # where _record_events wrote
    kept_hash = AuditEvent.objects.filter(chain=chain, seq=keep).values_list("hash", flat=True).get()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE chain = %s AND seq > %s", [chain, keep])
    AuditChainHead.objects.filter(chain=chain).update(seq=keep, hash=kept_hash)


def test_an_anchor_catches_newest_events_cut_off_with_the_head_rewritten(tmp_path):
    _record_events(5)
    anchor = tmp_path / "anchor.json"
    call_command("audit", "anchor", "--output", str(anchor))
    _record_events(2)  # the trail goes on after the anchor
    call_command("audit", "verify", "--anchor", str(anchor))  # passes

    _cut_off_newest_and_rewrite_the_head(keep=3)

    assert audit_verify_chain().ok  # the chain alone cannot tell
    with pytest.raises(CommandError, match="anchored event was removed"):
        call_command("audit", "verify", "--anchor", str(anchor))


def test_an_anchor_that_was_edited_is_refused(tmp_path):
    _record_events(2)
    anchor = audit_anchor()
    chains = anchor["chains"]
    assert isinstance(chains, dict)
    [head] = chains.values()
    head["hash"] = "0" * 64  # made to agree with a rewritten trail
    path = tmp_path / "anchor.json"
    path.write_text(json.dumps(anchor))

    with pytest.raises(CommandError, match="MAC does not match"):
        call_command("audit", "verify", "--anchor", str(path))
    with pytest.raises(AnchorError):
        audit_verify_anchor({"format": "something else"})


def test_an_anchor_holds_ids_and_hashes_only(capsys):
    _record_events(1)
    call_command("audit", "anchor")
    anchor = json.loads(capsys.readouterr().out)

    assert set(anchor) == {"format", "created_at", "chains", "mac"}
    assert all(set(head) == {"seq", "hash"} for head in anchor["chains"].values())
    assert audit_verify_anchor(anchor).ok


def test_events_are_built_in_the_models_column_order() -> None:
    """cakra.audit.services builds events positionally (half the cost of
    keywords): a new or moved column must be placed there too."""
    # The key, the chain, every hashed column in its order, then the hash.
    assert [field.attname for field in AuditEvent._meta.concrete_fields] == ["id", "chain", *HASHED_FIELDS, "hash"]
