"""Older audit events are sealed into compressed segments (Redis keeps every event; ~5x smaller once sealed).
Sealing moves bytes, it does not re-sign them: the chain, the signatures and the checkpoints verify as before, and
tampering inside a segment is caught at the event's sequence number."""

from __future__ import annotations

import threading
import zlib

import pytest

from services.state.audit import AuditLog
from tests.conftest import AUDIT_KEY

EVENTS, SEGMENTS, SEALED = "bgt:audit:events", "bgt:audit:segments", "bgt:audit:sealed"
SIZE = 4


@pytest.fixture()
def audit(redis_client, clock) -> AuditLog:
    return AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=clock, checkpoint_every=10, segment_size=SIZE,
                    keep_plain=SIZE)


def fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        audit.append("request.submitted" if i % 2 else "grant.activated", actor=f"user-{i}",
                     request_id=f"BG-{i % 3}", data={"i": i, "text": "ünïcødé ✓"})


def segment_lines(redis_client, index: int) -> list[bytes]:
    return zlib.decompress(redis_client.hget(SEGMENTS, index)).split(b"\n")


def put_segment(redis_client, index: int, lines: list[bytes]) -> None:
    redis_client.hset(SEGMENTS, index, zlib.compress(b"\n".join(lines)))


def test_old_events_are_sealed_and_recent_ones_stay_plain(audit, redis_client):
    fill(audit, 30)
    sealed = int(redis_client.get(SEALED))
    # At least one segment's worth of recent events stays a plain list (cheap to read for live requests).
    assert sealed % SIZE == 0 and SIZE <= redis_client.llen(EVENTS) < 2 * SIZE
    assert sealed + redis_client.llen(EVENTS) == 30
    assert redis_client.hlen(SEGMENTS) == sealed // SIZE
    assert audit.count() == 30
    assert [e.seq for e in audit.events()] == list(range(1, 31))
    assert [e.seq for e in audit.events(since_seq=5)] == list(range(6, 31))
    assert [e.seq for e in audit.for_request("BG-1")] == list(range(2, 31, 3))
    assert [e.data["i"] for e in audit.for_request("BG-2")] == list(range(2, 30, 3))
    assert len(list(audit.export())) == 30
    result = audit.verify()
    assert result.ok and result.count == 30 and result.checkpoints == 3, result.render()


def test_a_sealed_log_keeps_growing_and_verifying(audit):
    for _ in range(5):
        fill(audit, 7)
        assert audit.verify().ok
    assert audit.count() == 35


def test_an_edit_inside_a_segment_is_caught_at_its_sequence_number(audit, redis_client):
    fill(audit, 30)
    lines = segment_lines(redis_client, 1)  # events 5..8
    edited = lines[2].replace(b'"i":6', b'"i":7')
    assert edited != lines[2]
    put_segment(redis_client, 1, [*lines[:2], edited, *lines[3:]])
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 7 and "edited" in result.problem


def test_an_event_removed_from_a_segment_is_caught(audit, redis_client):
    fill(audit, 30)
    lines = segment_lines(redis_client, 0)
    put_segment(redis_client, 0, [lines[0], *lines[2:]])
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 2


def test_a_deleted_segment_is_named(audit, redis_client):
    fill(audit, 30)
    redis_client.hdel(SEGMENTS, 1)
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 5 and "missing" in result.problem
    assert "5" in result.problem and "8" in result.problem


def test_a_garbled_segment_is_named(audit, redis_client):
    fill(audit, 30)
    redis_client.hset(SEGMENTS, 0, b"not zlib at all")
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 1 and "unreadable" in result.problem


def test_a_forged_segment_fails_without_the_key(audit, redis_client, clock):
    fill(audit, 30)
    forger = AuditLog(redis_client, AUDIT_KEY[::-1], prefix="bgt", clock=clock, segment_size=SIZE, keep_plain=SIZE)
    assert not forger.verify().ok


def test_concurrent_appenders_seal_without_losing_or_doubling_events(redis_client, clock):
    logs = [AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=clock, segment_size=SIZE, keep_plain=SIZE)
            for _ in range(4)]
    errors: list[BaseException] = []

    def write(log: AuditLog, who: int) -> None:
        try:
            for i in range(40):
                log.append("request.submitted", actor=f"writer-{who}", request_id=f"BG-{who}", data={"i": i})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(log, n)) for n, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = logs[0].verify()
    assert result.ok and result.count == 160, result.render()
    for who in range(4):
        assert [e.data["i"] for e in logs[0].for_request(f"BG-{who}")] == list(range(40))
    assert int(redis_client.get(SEALED)) >= 160 - 2 * SIZE


def test_by_default_the_newest_four_segments_worth_stay_plain(redis_client, clock):
    # Receipts read a live request's trail right after its events: those should not need a decompression.
    audit = AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=clock, segment_size=SIZE)
    fill(audit, 60)
    assert 4 * SIZE <= redis_client.llen(EVENTS) < 5 * SIZE
    assert int(redis_client.get(SEALED)) + redis_client.llen(EVENTS) == 60
    assert audit.verify().ok


def test_a_trail_reads_each_sealed_segment_once_per_process(audit, redis_client):
    fill(audit, 30)
    first = [e.seq for e in audit.for_request("BG-0")]
    redis_client.hset(SEGMENTS, 0, b"garbled after it was read")
    # Sealed segments never change, so the trail comes from the cache; verify() still reads Redis.
    assert [e.seq for e in audit.for_request("BG-0")] == first
    assert not audit.verify().ok
