from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from services.state.audit import GENESIS, AuditLog, event_hash
from tests.conftest import AUDIT_KEY

EVENTS = "bgt:audit:events"


def fill(audit: AuditLog, n: int = 25) -> None:
    for i in range(n):
        audit.append("request.submitted" if i % 2 else "grant.activated", actor=f"user-{i}",
                     request_id=f"BG-{i % 3}", data={"i": i, "text": "ünïcødé ✓"})


def raw(redis_client, seq: int) -> bytes:
    return redis_client.lindex(EVENTS, seq - 1)


def test_clean_log_verifies(audit):
    fill(audit)
    result = audit.verify()
    assert result.ok and result.count == 25 and result.checkpoints == 2
    assert [e.seq for e in audit.for_request("BG-1")] == [2, 5, 8, 11, 14, 17, 20, 23]


def test_an_append_given_the_current_head_does_not_read_it(round_trips, clock):
    log = AuditLog(round_trips, AUDIT_KEY, prefix="bgt", clock=clock)
    first = log.append("request.submitted", actor="user-1")
    head = round_trips.get(log.head_key)
    round_trips.sent.clear()
    second = log.append("request.approved", actor="user-2", head=head)
    assert round_trips.sent == ["EVALSHA"]
    assert second.seq == 2 and second.prev == first.hash and log.verify().ok


def test_an_append_given_a_stale_head_reads_it_and_chains_correctly(round_trips, clock):
    log = AuditLog(round_trips, AUDIT_KEY, prefix="bgt", clock=clock)
    log.append("request.submitted", actor="user-1")
    stale = round_trips.get(log.head_key)
    meanwhile = log.append("grant.requested", actor="worker")  # another process appended after the head was read
    round_trips.sent.clear()
    ev = log.append("request.approved", actor="user-2", head=stale)
    assert round_trips.sent == ["EVALSHA", "GET", "EVALSHA"]
    assert ev.seq == 3 and ev.prev == meanwhile.hash
    result = log.verify()
    assert result.ok and result.count == 3


def test_an_append_given_no_head_starts_the_chain(round_trips, clock):
    log = AuditLog(round_trips, AUDIT_KEY, prefix="bgt", clock=clock)
    ev = log.append("request.submitted", actor="user-1", head=None)
    assert ev.seq == 1 and ev.prev == GENESIS and log.verify().ok


def test_empty_log_verifies(audit):
    assert audit.verify().ok


def test_one_byte_edit_is_caught_at_its_sequence_number(audit, redis_client):
    fill(audit)
    original = raw(redis_client, 7)
    edited = original.replace(b'"i":6', b'"i":7')
    assert len(edited) == len(original) and edited != original
    redis_client.lset(EVENTS, 6, edited)
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 7 and "edited" in result.problem


@pytest.mark.parametrize("offset", range(0, 40, 7))
def test_any_single_byte_flip_is_caught(audit, redis_client, offset):
    fill(audit, 12)
    original = bytearray(raw(redis_client, 5))
    position = min(offset, len(original) - 1)
    original[position] ^= 0x01
    redis_client.lset(EVENTS, 4, bytes(original))
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 5


def test_deleted_event_is_named(audit, redis_client):
    fill(audit)
    redis_client.lrem(EVENTS, 1, raw(redis_client, 9))
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 9 and "missing" in result.problem


def test_reordered_events_are_named(audit, redis_client):
    fill(audit)
    a, b = raw(redis_client, 12), raw(redis_client, 15)
    redis_client.lset(EVENTS, 11, b)
    redis_client.lset(EVENTS, 14, a)
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 12


def test_truncated_tail_is_named(audit, redis_client):
    fill(audit)
    redis_client.ltrim(EVENTS, 0, 19)  # drop the newest 5
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 21 and "truncated" in result.problem


def test_truncation_with_the_head_deleted_is_still_caught(audit, redis_client):
    fill(audit)
    redis_client.ltrim(EVENTS, 0, 21)
    redis_client.delete("bgt:audit:head")
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 23


def rechain(redis_client, events: list[dict], start: int, key: bytes | None = None) -> str:
    """Rewrite events[start:] with recomputed hashes, as an attacker without the real key would after an edit: with
    `key` (never the real one) every MAC is re-signed too, without it the old MACs stay. Returns the newest hash."""
    prev = events[start - 1]["hash"] if start else GENESIS
    for idx in range(start, len(events)):
        body = {k: events[idx][k] for k in ("seq", "at", "event", "actor", "request_id", "data")}
        body["prev"] = prev
        digest = event_hash(body)
        mac = hmac.new(key, f"event|{digest}".encode(), hashlib.sha256).hexdigest() if key else events[idx]["mac"]
        redis_client.lset(EVENTS, idx, json.dumps({**body, "hash": digest, "mac": mac}))
        prev = digest
    return prev


def test_chain_recomputed_without_the_key_is_caught(audit, redis_client):
    fill(audit)
    forged_key = b"attacker-does-not-know-the-real-key!!"
    events = [json.loads(r) for r in redis_client.lrange(EVENTS, 0, -1)]
    events[9]["data"]["i"] = 999  # seq 10
    prev = rechain(redis_client, events, 0, forged_key)
    head_mac = hmac.new(forged_key, f"head|{len(events)}|{prev}".encode(), hashlib.sha256).hexdigest()
    redis_client.set("bgt:audit:head", json.dumps({"seq": len(events), "hash": prev, "mac": head_mac}))
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 1  # every forged signature fails, the first one is named


def test_chain_recomputed_from_an_edit_without_the_key_names_the_edit(audit, redis_client):
    fill(audit)
    events = [json.loads(r) for r in redis_client.lrange(EVENTS, 0, -1)]
    events[9]["data"]["i"] = 999
    rechain(redis_client, events, 9)
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 10 and "signature" in result.problem


def test_export_since_filters_by_time(audit, clock):
    from datetime import timedelta
    audit.append("a.happened", actor="x")
    clock.advance(timedelta(hours=1))
    cut = clock.now()
    audit.append("b.happened", actor="x")
    lines = list(audit.export(since=cut))
    assert [json.loads(line)["event"] for line in lines] == ["b.happened"]


def test_wrong_key_fails_verification(redis_client, clock, audit):
    fill(audit, 3)
    other = AuditLog(redis_client, AUDIT_KEY[::-1], prefix="bgt", clock=clock)
    assert not other.verify().ok
