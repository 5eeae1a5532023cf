from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from policies.lifecycle import Event, InvalidTransitionError, State
from policies.model import Actor, CardRef, Grant
from services.errors import ConflictError, NotFoundError, StaleVersionError
from services.state.store import RequestStore, new_request_id
from tests.factories import PEOPLE, facts, record_for, request, ticket

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
GA = "62e90394-69f5-4237-9190-012177145e10"


def pending_record(policy, rid="BG-PEND01"):
    req = request("riley", rid=rid, ticket_ref="INC0012347",
                  justification="Migrate the legacy MFA registrations to the new policy, INC0012347", at=NOW)
    return record_for(policy, req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")),
                      NOW)


def test_ids_are_typeable():
    rid = new_request_id()
    assert rid.startswith("BG-") and len(rid) == 9 and not set(rid[3:]) & set("01IO")


def test_create_get_and_indexes(store, policy):
    rec = store.create(pending_record(policy))
    assert store.get(rec.id) == rec
    assert store.ids_in_state(State.PENDING_APPROVAL) == [rec.id]
    assert [r.id for r in store.by_requester(PEOPLE["riley"].object_id)] == [rec.id]
    assert [r.id for r in store.pending_for_approver(PEOPLE["dana"].object_id)] == [rec.id]
    assert store.due_approvals(NOW + timedelta(minutes=11)) == [rec.id]
    with pytest.raises(ConflictError):
        store.create(rec)


def test_same_draft_submitted_twice_creates_one_request(store, policy):
    first = store.create(pending_record(policy, "BG-DRAFT1"), draft_id="draft-1")
    second = store.create(pending_record(policy, "BG-DRAFT2"), draft_id="draft-1")
    assert second.id == first.id and store.get("BG-DRAFT2") is None


def test_transition_moves_indexes_atomically(store, policy):
    rec = store.create(pending_record(policy))
    actor = Actor(object_id=PEOPLE["dana"].object_id)
    new = store.update(rec.id, lambda r: r.apply(Event.APPROVED, actor, NOW))
    assert new.state is State.APPROVED and new.version == rec.version + 1
    assert store.ids_in_state(State.PENDING_APPROVAL) == []
    assert store.ids_in_state(State.APPROVED) == [rec.id]
    assert store.pending_for_approver(PEOPLE["dana"].object_id) == []
    assert store.due_approvals(NOW + timedelta(days=1)) == []


def test_a_change_made_meanwhile_is_never_overwritten(store, policy):
    # Another process records a card copy between this update's read and its write: the write is refused and the
    # change is re-run on the record as it now is, so both survive.
    rec = store.create(pending_record(policy))
    card = CardRef(service_url="https://smba.example/", conversation_id="a:1", activity_id="1")
    seen: list[int] = []

    def approve(r):
        seen.append(r.version)
        if len(seen) == 1:
            store.update(rec.id, lambda other: other.with_changes(NOW, cards=(*other.cards, card)))
        return r.apply(Event.APPROVED, Actor(object_id=PEOPLE["dana"].object_id), NOW)

    new = store.update(rec.id, approve)
    assert seen == [rec.version, rec.version + 1]
    assert new.state is State.APPROVED and new.cards == (card,) and new.version == rec.version + 2
    assert store.get(rec.id) == new
    assert store.ids_in_state(State.APPROVED) == [rec.id] and store.ids_in_state(State.PENDING_APPROVAL) == []


def test_an_update_reads_the_peeked_key_with_the_record(round_trips, policy):
    # The audit head is read in the same round trip as the record it is about to describe: MGET, then the write.
    store = RequestStore(round_trips, prefix="bgt")
    rec = store.create(pending_record(policy))
    round_trips.set("bgt:elsewhere", b"head-7")
    round_trips.sent.clear()
    new, peeked = store.update_peeking(rec.id, lambda r: r.apply(Event.APPROVED, Actor(object_id=PEOPLE["dana"]
                                                                                          .object_id), NOW),
                                       "bgt:elsewhere")
    assert round_trips.sent == ["MGET", "EVALSHA"]
    assert peeked == b"head-7" and new.state is State.APPROVED and store.get(rec.id) == new
    unchanged, peeked = store.update_peeking(rec.id, lambda r: r, "bgt:nothing-here")
    assert unchanged == new and peeked is None


def test_illegal_transition_writes_nothing(store, policy):
    rec = store.create(pending_record(policy))
    with pytest.raises(InvalidTransitionError):
        store.update(rec.id, lambda r: r.apply(Event.ACTIVATED, Actor.system("x"), NOW))
    assert store.get(rec.id) == rec


def test_expected_version_is_compared(store, policy):
    rec = store.create(pending_record(policy))
    with pytest.raises(StaleVersionError):
        store.update(rec.id, lambda r: r.apply(Event.APPROVED, Actor.system("x"), NOW),
                     expected_version=rec.version + 5)
    with pytest.raises(NotFoundError):
        store.update("BG-NOPE00", lambda r: r)


def test_concurrent_approve_and_deny_leave_exactly_one_terminal_state(redis_client, policy):
    store = RequestStore(redis_client, prefix="bgt")
    outcomes = []
    for i in range(20):
        rec = store.create(pending_record(policy, f"BG-RACE{i:02d}"))
        barrier = threading.Barrier(2)
        results: list[object] = []

        def act(event, who, rid=rec.id, barrier=barrier, results=results):
            barrier.wait()
            try:
                results.append(store.update(rid, lambda r: r.apply(event, Actor(object_id=who), NOW)).state)
            except InvalidTransitionError:
                results.append("refused")

        threads = [threading.Thread(target=act, args=(Event.APPROVED, "dana")),
                   threading.Thread(target=act, args=(Event.DENIED, "bo"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(map(str, results)).count("refused") == 1, results
        final = store.get(rec.id)
        assert final.version == rec.version + 1
        outcomes.append(final.state)
    assert set(outcomes) <= {State.APPROVED, State.DENIED}


def test_active_grants_are_indexed_by_expiry(store, policy):
    rec = store.create(record_for(policy, request("sam", at=NOW), facts("sam", ticket_facts=ticket()), NOW))
    ends = NOW + timedelta(minutes=30)
    grant = Grant(request_id=rec.id, principal_id=rec.request.target, role_definition_id=GA, starts_at=NOW,
                  ends_at=ends, generation=1)
    store.update(rec.id, lambda r: r.apply(Event.ACTIVATION_STARTED, Actor.system("w"), NOW))
    store.update(rec.id, lambda r: r.apply(Event.ACTIVATED, Actor.system("w"), NOW, grant=grant))
    assert store.due_expiries(ends - timedelta(seconds=1)) == []
    assert store.due_expiries(ends) == [(rec.id, ends.timestamp())]
    assert [g.request_id for g in store.open_grants_of(PEOPLE["sam"].object_id)] == [rec.id]
    store.update(rec.id, lambda r: r.apply(Event.REVOCATION_STARTED, Actor.system("w"), ends))
    assert store.due_expiries(ends) == [(rec.id, ends.timestamp())]  # still holds access while revoking
    store.update(rec.id, lambda r: r.apply(Event.EXPIRED, Actor.system("w"), ends))
    assert store.due_expiries(ends + timedelta(days=1)) == []


def test_first_time_dedupes_retried_deliveries(store):
    assert store.first_time("activity:f:123") is True
    assert store.first_time("activity:f:123") is False


class TestLedger:
    P = PEOPLE["sam"].object_id

    def test_overlapping_grants_are_reference_counted(self, store):
        t1, t2 = NOW + timedelta(minutes=30), NOW + timedelta(minutes=60)
        store.ledger_hold(self.P, GA, "/", "BG-A", t1)
        gen = store.ledger_assigned(self.P, GA, "/", "assign-1", "pim", new_assignment=True)
        assert gen == 1
        state = store.ledger_hold(self.P, GA, "/", "BG-B", t2)
        assert state.assignment_id == "assign-1" and set(state.holders) == {"BG-A", "BG-B"}
        first = store.ledger_release(self.P, GA, "/", "BG-A", gen)
        assert not first.remove_assignment and set(first.remaining) == {"BG-B"}
        last = store.ledger_release(self.P, GA, "/", "BG-B", gen)
        assert last.remove_assignment and last.assignment_id == "assign-1"
        assert store.ledger_cleared(self.P, GA, "/", gen)
        assert store.ledger(self.P, GA).assignment_id is None
        assert store.ledgers_with_assignment() == []

    def test_an_old_revoke_never_removes_a_newer_grant(self, store):
        store.ledger_hold(self.P, GA, "/", "BG-OLD", NOW)
        old_gen = store.ledger_assigned(self.P, GA, "/", "assign-1", "pim", new_assignment=True)
        store.ledger_release(self.P, GA, "/", "BG-OLD", old_gen)
        store.ledger_cleared(self.P, GA, "/", old_gen)
        store.ledger_hold(self.P, GA, "/", "BG-NEW", NOW + timedelta(hours=1))
        new_gen = store.ledger_assigned(self.P, GA, "/", "assign-2", "pim", new_assignment=True)
        assert new_gen == old_gen + 1
        replay = store.ledger_release(self.P, GA, "/", "BG-OLD", old_gen)
        assert replay.stale and not replay.remove_assignment
        # Even a holder from an older generation must not remove the newer assignment.
        store.ledger_hold(self.P, GA, "/", "BG-OLD", NOW)
        mixed = store.ledger_release(self.P, GA, "/", "BG-OLD", old_gen)
        assert not mixed.remove_assignment
        assert store.ledger(self.P, GA).assignment_id == "assign-2"


def test_records_are_stored_compressed_against_the_shared_dictionary(store, policy, redis_client):
    # One record per request stays in Redis; most of its ~5 KB of JSON (field names, rule sentences) is shared by
    # every record, which a preset deflate dictionary removes: several times smaller than zlib on its own.
    import zlib

    from services.state.store import decode, encode

    rec = store.create(pending_record(policy))
    raw = redis_client.get(f"bgt:req:{rec.id}")
    plain = rec.model_dump_json().encode()
    assert raw == encode(rec) and decode(raw) == rec
    assert len(raw) * 2.5 < len(zlib.compress(plain, 9))
    # Records written by earlier versions stay readable: plain JSON and plain zlib.
    assert decode(plain) == rec and decode(zlib.compress(plain)) == rec


def test_the_record_dictionary_never_changes():
    # Stored records can only be decoded with the exact dictionary they were written with; a new dictionary needs
    # a new format marker, and this one must stay readable.
    import hashlib
    from pathlib import Path

    import services.state.store

    data = (Path(services.state.store.__file__).parent / "record-dict-v1.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == "52f606fc08da3638f5e40e7a7ed02678563e721f136290bd8783400aad25f5ce"
