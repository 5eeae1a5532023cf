"""Append-only, hash-chained audit log in Redis with HMAC-signed events, head and checkpoints.

Each event stores `hash = sha256(RFC 8785 canonical JSON of the event incl. prev)` and `mac = HMAC(key, hash)`.
Editing an event breaks its hash; recomputing the whole chain without the key breaks the MACs; deleting or
reordering breaks the sequence; truncating the newest events leaves the signed head (and checkpoints) pointing
past the end. `verify()` names the first sequence number that is wrong in each case.

Storage: new events are appended to a Redis list; once it holds `keep_plain` events plus a segment, the oldest
`segment_size` events are sealed into one zlib-compressed segment (the same bytes, newline-joined) in a hash. Redis
keeps every event, about five times smaller once sealed (a 10,000-grant deployment holds over 100,000 events); the
newest `keep_plain` stay plain, so the jobs that read a live request's trail (receipts) rarely decompress, and the
segments they do need are cached (sealed segments never change). Sealing moves bytes without re-signing them, so
it neither needs nor weakens the key: an edit inside a segment breaks that event's hash exactly as it would in the
list.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis
import rfc8785

from services.clock import Clock, SystemClock
from services.errors import ConflictError, ServiceError
from services.state.commit import Ops

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHUNK = 1000
SEGMENT_SIZE = 256
SEGMENT_CACHE = 32  # decompressed segments kept per process for for_request (~150 KB each)

_UNREAD = object()  # append(head=...) not given: read it
# Outcomes an attacker of Redis would most like to erase: each is anchored outside Redis as soon as it is logged.
ANCHORED_EVENTS = frozenset({"grant.activated", "grant.extended", "grant.expired", "grant.revoked"})


class Anchor(Protocol):
    """Somewhere outside Redis a signed checkpoint is kept (services.state.anchors.AnchorFile)."""

    def append(self, checkpoint: dict[str, Any]) -> None: ...

# Atomic append: only succeeds if nobody appended since we read the head (expected count, sealed + plain).
# Returns the length of the plain list, which tells the appender when to seal.
_APPEND = """
local sealed = tonumber(redis.call('GET', KEYS[5]) or '0')
local len = redis.call('LLEN', KEYS[1])
if sealed + len ~= tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[1] + 1) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], ARGV[1] + 1, ARGV[5]) end
return len + 1
"""

# Atomic seal: store the compressed copy of the list's first ARGV[2] events as segment ARGV[3] and drop them
# from the list, only if nobody sealed since we read them (appends only add at the other end).
_SEAL = """
local sealed = tonumber(redis.call('GET', KEYS[2]) or '0')
if sealed ~= tonumber(ARGV[1]) or redis.call('LLEN', KEYS[1]) < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('LTRIM', KEYS[1], ARGV[2], -1)
redis.call('SET', KEYS[2], sealed + tonumber(ARGV[2]))
return 1
"""

# Consistent reads across a concurrent seal: the sealed count and the plain events at the given 0-based positions
# (false where a position is sealed or past the end).
_PICK = """
local sealed = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {}
for i = 1, #ARGV do
  local p = tonumber(ARGV[i])
  if p >= sealed then out[i] = redis.call('LINDEX', KEYS[1], p - sealed) or false else out[i] = false end
end
return {sealed, out}
"""
_RANGE = """
local sealed = tonumber(redis.call('GET', KEYS[2]) or '0')
local s = tonumber(ARGV[1])
if s < sealed then return {sealed, {}} end
return {sealed, redis.call('LRANGE', KEYS[1], s - sealed, s - sealed + tonumber(ARGV[2]) - 1)}
"""


def canonical(obj: Any) -> bytes:
    return rfc8785.dumps(obj)


def event_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: str
    event: str
    actor: str
    request_id: str | None
    data: dict[str, Any]
    prev: str
    hash: str
    mac: str

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "event": self.event, "actor": self.actor,
                "request_id": self.request_id, "data": self.data, "prev": self.prev}

    def to_json(self) -> str:
        return json.dumps({**self.body(), "hash": self.hash, "mac": self.mac}, ensure_ascii=False,
                          separators=(",", ":"))


@dataclass(frozen=True)
class PreparedEvent:
    """An event ready to append: valid only while the log still holds `expected_seq` events."""

    event: AuditEvent
    expected_seq: int
    head: str
    checkpoint: str
    ops: Ops


class AuditStorageError(ServiceError):
    """A sealed segment is missing or unreadable; `seq` is its first event."""

    def __init__(self, seq: int, problem: str):
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: str = ""
    checkpoints: int = 0
    anchors: int | None = None  # checkpoints outside Redis the log still reaches (None: not checked)
    requests: int | None = None  # requests whose events the log holds (None: not checked)

    def render(self) -> str:
        if self.ok:
            text = f"OK: {self.count} events, chain and signatures valid, {self.checkpoints} checkpoint(s) valid"
            if self.anchors is not None:
                text += f", {self.anchors} anchor(s) outside Redis reached"
            if self.requests is not None:
                text += f", the events of {self.requests} request(s) present"
            return text
        if self.first_bad_seq is None:
            return f"FAILED: {self.problem}"
        return f"FAILED at seq {self.first_bad_seq}: {self.problem}"


class AuditLog:
    def __init__(self, client: redis.Redis, hmac_key: bytes, *, prefix: str = "bg", clock: Clock | None = None,
                 checkpoint_every: int = 100, segment_size: int = SEGMENT_SIZE, keep_plain: int | None = None,
                 anchor: Anchor | None = None):
        if len(hmac_key) < 16:
            raise ValueError("audit HMAC key is too short")
        if segment_size < 1:
            raise ValueError("segment_size must be positive")
        self.keep_plain = 4 * segment_size if keep_plain is None else keep_plain
        if self.keep_plain < 0:
            raise ValueError("keep_plain must not be negative")
        self.redis = client
        self.key = hmac_key
        self.clock = clock or SystemClock()
        self.checkpoint_every = checkpoint_every
        self.anchor = anchor
        self.segment_size = segment_size
        # Sealed segments never change: for_request may keep the ones it decompressed (verify reads Redis every time).
        self._cached_segment = functools.lru_cache(maxsize=SEGMENT_CACHE)(self._segment)
        self.k_events = f"{prefix}:audit:events"
        self.k_head = f"{prefix}:audit:head"
        self.k_checkpoints = f"{prefix}:audit:checkpoints"
        self.k_by_request = f"{prefix}:audit:req:"
        self.k_sealed = f"{prefix}:audit:sealed"
        self.k_segments = f"{prefix}:audit:segments"
        self._append = self.redis.register_script(_APPEND)
        self._seal = self.redis.register_script(_SEAL)
        self._pick = self.redis.register_script(_PICK)
        self._range = self.redis.register_script(_RANGE)

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()

    @property
    def head_key(self) -> str:
        """Where the head lives, for a caller that reads it in a round trip it makes anyway (`append(head=)`)."""
        return self.k_head

    def _head(self, raw: bytes | object | None = _UNREAD) -> tuple[int, str]:
        if raw is _UNREAD:
            raw = self.redis.get(self.k_head)
        if raw is None:
            return 0, GENESIS
        head = json.loads(raw)  # type: ignore[arg-type]
        return int(head["seq"]), str(head["hash"])

    def append(self, event: str, *, actor: str, request_id: str | None = None,
               data: dict[str, Any] | None = None, head: bytes | object | None = _UNREAD) -> AuditEvent:
        """Append one event. `head` is the raw head as the caller read it (None: there was none), saving a read;
        the append script compares it with the log, so a head that went stale only costs this one more read."""
        known = head
        for _ in range(200):
            prepared = self.prepare(event, actor=actor, request_id=request_id, data=data, head=known)
            known = _UNREAD
            keys = [self.k_events, self.k_head, self.k_by_request + (request_id or "-"), self.k_checkpoints,
                    self.k_sealed]
            plain = int(self._append(keys=keys, args=[prepared.expected_seq, prepared.event.to_json(),
                                                      prepared.head, request_id or "", prepared.checkpoint]))
            if plain > 0:
                return self.appended(prepared, plain)
        raise ConflictError("audit append kept losing races")

    def prepare(self, event: str, *, actor: str, request_id: str | None = None, data: dict[str, Any] | None = None,
                head: bytes | object | None = _UNREAD) -> PreparedEvent:
        """The event chained onto `head` (read now when not given) and the writes that append it, for a caller that
        applies them itself in one round trip with other writes (services/state/commit.py), guarded by
        `expected_seq`; then `appended()`."""
        payload = json.loads(json.dumps(data or {}, default=str))  # JSON-safe and detached from the caller
        seq, prev = self._head(head)
        body = {"seq": seq + 1, "at": self.clock.now().isoformat(), "event": event, "actor": actor,
                "request_id": request_id, "data": payload, "prev": prev}
        digest = event_hash(body)
        ev = AuditEvent(**body, hash=digest, mac=self._mac("event", digest))
        head_value = json.dumps({"seq": ev.seq, "hash": digest, "mac": self._mac("head", f"{ev.seq}|{digest}")})
        checkpoint = ""
        if ev.seq % self.checkpoint_every == 0:
            checkpoint = json.dumps({"seq": ev.seq, "hash": digest, "at": ev.at,
                                     "mac": self._mac("checkpoint", f"{ev.seq}|{digest}")})
        ops = Ops().add("RPUSH", self.k_events, ev.to_json()).add("SET", self.k_head, head_value)
        if request_id:
            ops.add("RPUSH", self.k_by_request + request_id, ev.seq)
        if checkpoint:
            ops.add("HSET", self.k_checkpoints, ev.seq, checkpoint)
        return PreparedEvent(event=ev, expected_seq=seq, head=head_value, checkpoint=checkpoint, ops=ops)

    def appended(self, prepared: PreparedEvent, plain: int) -> AuditEvent:
        """What follows an append that went through: its log line, its anchor, sealing once a segment is full."""
        ev = prepared.event
        # One log line per audit event: logs and the audit log correlate on audit_seq / request_id.
        log.info(ev.event, extra={"audit_seq": ev.seq, "request_id": ev.request_id, "actor": ev.actor})
        if self.anchor is not None and (prepared.checkpoint or ev.event in ANCHORED_EVENTS):
            self._anchor({"seq": ev.seq, "hash": ev.hash, "at": ev.at,
                          "mac": self._mac("checkpoint", f"{ev.seq}|{ev.hash}")})
        if plain >= self.keep_plain + self.segment_size:
            self.seal()
        return ev

    def seal(self) -> int:
        """Seal full segments while `keep_plain` events stay plain; returns how many were sealed.
        Appenders call this as they go (one zlib pass per `segment_size` events); concurrent sealers are safe,
        the loser's attempt is a no-op."""
        done = 0
        size = self.segment_size
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.k_sealed).llen(self.k_events).lrange(self.k_events, 0, size - 1)
                sealed_raw, length, oldest = pipe.execute()
            sealed = int(sealed_raw or 0)
            if int(length) < self.keep_plain + size or len(oldest) < size:
                return done
            blob = zlib.compress(b"\n".join(oldest))
            if not int(self._seal(keys=[self.k_events, self.k_sealed, self.k_segments],
                                  args=[sealed, size, sealed // size, blob])):
                return done  # somebody else sealed it
            done += 1

    def _anchor(self, checkpoint: dict[str, Any]) -> None:
        # The event is in the log already; an anchor that could not be written only weakens what verify can prove
        # later, so it is reported, never allowed to fail the grant or revocation being logged.
        assert self.anchor is not None
        try:
            self.anchor.append(checkpoint)
        except OSError as exc:
            log.error("audit anchor could not be written", extra={"audit_seq": checkpoint["seq"],
                                                                  "error": str(exc)})

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current head as a checkpoint (also written every `checkpoint_every` events), in Redis and in
        the anchor outside it."""
        seq, digest = self._head()
        if seq == 0:
            return None
        cp = {"seq": seq, "hash": digest, "at": self.clock.now().isoformat(),
              "mac": self._mac("checkpoint", f"{seq}|{digest}")}
        self.redis.hset(self.k_checkpoints, seq, json.dumps(cp))
        if self.anchor is not None:
            self._anchor(cp)
        return cp

    def genuine(self, ev: AuditEvent) -> bool:
        """The event is what breakglass wrote: its hash matches its content and its MAC the hash."""
        digest = event_hash(ev.body())
        return digest == ev.hash and hmac.compare_digest(ev.mac, self._mac("event", digest))

    def count(self) -> int:
        with self.redis.pipeline(transaction=True) as pipe:
            sealed, length = pipe.get(self.k_sealed).llen(self.k_events).execute()
        return int(sealed or 0) + int(length)

    def _segment(self, index: int) -> list[bytes]:
        first, last = index * self.segment_size + 1, (index + 1) * self.segment_size
        blob = self.redis.hget(self.k_segments, index)
        if blob is None:
            raise AuditStorageError(first, f"sealed segment {index} (events {first}–{last}) is missing: deleted")
        try:
            return zlib.decompress(blob).split(b"\n")
        except zlib.error:
            raise AuditStorageError(first, f"sealed segment {index} (events {first}–{last}) is unreadable: "
                                           "edited") from None

    def _raw_events(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(position, stored bytes) from 0-based `start`; positions are 1-based like sequence numbers."""
        index = start
        keys = [self.k_events, self.k_sealed]
        while end is None or index < end:
            want = CHUNK if end is None else min(CHUNK, end - index)
            sealed, chunk = self._range(keys=keys, args=[index, want])
            if index < int(sealed):
                segment = index // self.segment_size
                lines = self._segment(segment)
                skip = index - segment * self.segment_size
                for offset, raw in enumerate(lines[skip:], start=skip):
                    position = segment * self.segment_size + offset + 1
                    if end is not None and position > end:
                        return
                    yield position, raw
                index = (segment + 1) * self.segment_size
                continue
            if not chunk:
                return
            for raw in chunk:
                index += 1
                yield index, raw

    def events(self, since_seq: int = 0) -> Iterator[AuditEvent]:
        for _, raw in self._raw_events(since_seq):
            yield AuditEvent(**json.loads(raw))

    def for_request(self, request_id: str) -> list[AuditEvent]:
        seqs = [int(s) for s in self.redis.lrange(self.k_by_request + request_id, 0, -1)]
        if not seqs:
            return []
        sealed, plain = self._pick(keys=[self.k_events, self.k_sealed], args=[s - 1 for s in seqs])
        segments: dict[int, list[bytes]] = {}
        out = []
        for s, raw in zip(seqs, plain, strict=True):
            if s <= int(sealed):
                index = (s - 1) // self.segment_size
                if index not in segments:
                    segments[index] = self._cached_segment(index)
                lines = segments[index]
                offset = (s - 1) % self.segment_size
                raw = lines[offset] if offset < len(lines) else None
            if raw is not None:
                out.append(AuditEvent(**json.loads(raw)))
        return out

    def export(self, since: datetime | None = None) -> Iterator[str]:
        for ev in self.events():
            if since is not None and datetime.fromisoformat(ev.at) < since:
                continue
            yield ev.to_json()

    def verify(self, *, collect: Callable[[AuditEvent], None] | None = None, hashes: dict[int, str] | None = None,
               want: set[int] | frozenset[int] = frozenset()) -> VerifyResult:
        """The chain, signatures, head and checkpoints. `collect` sees every verified event; `hashes` receives the
        hash of each seq in `want` (anchors to compare with)."""
        # One consistent snapshot of head, length and checkpoints (appends are atomic in Redis), so events that
        # a live system appends while we read are not mistaken for tampering; they are checked next time. A seal
        # meanwhile only moves events, and reads follow it.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.k_head).get(self.k_sealed).llen(self.k_events).hgetall(self.k_checkpoints)
            head_raw, sealed, length, checkpoints = pipe.execute()
        cps = {int(k): json.loads(v) for k, v in checkpoints.items()}
        cp_hashes: dict[int, str] = {}
        prev = GENESIS
        count = 0
        events = self._raw_events(end=int(sealed or 0) + int(length))
        while True:
            try:
                position, raw = next(events)
            except StopIteration:
                break
            except AuditStorageError as exc:
                return VerifyResult(False, count, exc.seq, exc.problem)
            count = position
            try:
                stored = json.loads(raw)
                ev = AuditEvent(**stored)
            except (ValueError, TypeError) as exc:
                return VerifyResult(False, count, position, f"event is unreadable ({type(exc).__name__}): edited")
            if ev.seq != position:
                what = (f"event {position} is missing (deleted); found {ev.seq} in its place" if ev.seq > position
                        else f"found event {ev.seq} at position {position}: reordered or duplicated")
                return VerifyResult(False, count, position, what)
            if ev.prev != prev:
                return VerifyResult(False, count, position, "previous-hash link broken: events reordered or an "
                                                            "earlier event replaced")
            digest = event_hash(ev.body())
            if digest != ev.hash:
                return VerifyResult(False, count, position, "content does not match its hash: edited")
            if not hmac.compare_digest(ev.mac, self._mac("event", digest)):
                return VerifyResult(False, count, position, "signature invalid: chain rewritten without the key")
            if ev.seq in cps:
                cp_hashes[ev.seq] = digest
            if hashes is not None and ev.seq in want:
                hashes[ev.seq] = digest
            if collect is not None:
                collect(ev)
            prev = digest
        if head_raw is None:
            if count:
                return VerifyResult(False, count, count + 1, "the signed head is missing: the log may have been "
                                                             "truncated after this point")
        else:
            head = json.loads(head_raw)
            if not hmac.compare_digest(str(head.get("mac", "")),
                                       self._mac("head", f"{head.get('seq')}|{head.get('hash')}")):
                return VerifyResult(False, count, count + 1, "the head signature is invalid")
            if int(head["seq"]) > count:
                return VerifyResult(False, count, count + 1,
                                    f"truncated: the signed head is at seq {head['seq']} but the log ends at {count}")
            if int(head["seq"]) < count:
                return VerifyResult(False, count, int(head["seq"]) + 1, "events after the signed head were appended "
                                                                        "outside breakglass")
            if head["hash"] != prev:
                return VerifyResult(False, count, count, "the newest event does not match the signed head")
        checked = 0
        for seq in sorted(cps):
            cp = cps[seq]
            if not hmac.compare_digest(str(cp.get("mac", "")), self._mac("checkpoint", f"{seq}|{cp.get('hash')}")):
                return VerifyResult(False, count, seq, "checkpoint signature invalid")
            if seq > count:
                return VerifyResult(False, count, count + 1, f"truncated: checkpoint at seq {seq} is past the end")
            if cp_hashes.get(seq) != cp["hash"]:
                return VerifyResult(False, count, seq, "event does not match its signed checkpoint")
            checked += 1
        return VerifyResult(True, count, checkpoints=checked)
