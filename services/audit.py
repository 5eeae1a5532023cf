"""Append-only, hash-chained audit log in Redis with HMAC-signed events, head and checkpoints.

Each event stores `hash = sha256(RFC 8785 canonical JSON of the event incl. prev)` and `mac = HMAC(key, hash)`.
Editing an event breaks its hash; recomputing the whole chain without the key breaks the MACs; deleting or
reordering breaks the sequence; truncating the newest events leaves the signed head (and checkpoints) pointing
past the end. `verify()` names the first sequence number that is wrong in each case.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
import rfc8785

from services.clock import Clock, SystemClock
from services.errors import ConflictError

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHUNK = 1000

# Atomic append: only succeeds if nobody appended since we read the head (expected length).
_APPEND = """
local len = redis.call('LLEN', KEYS[1])
if len ~= tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[1] + 1) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], ARGV[1] + 1, ARGV[5]) end
return len + 1
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
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    problem: str = ""
    checkpoints: int = 0

    def render(self) -> str:
        if self.ok:
            return f"OK: {self.count} events, chain and signatures valid, {self.checkpoints} checkpoint(s) valid"
        return f"FAILED at seq {self.first_bad_seq}: {self.problem}"


class AuditLog:
    def __init__(self, client: redis.Redis, hmac_key: bytes, *, prefix: str = "bg", clock: Clock | None = None,
                 checkpoint_every: int = 100):
        if len(hmac_key) < 16:
            raise ValueError("audit HMAC key is too short")
        self.redis = client
        self.key = hmac_key
        self.clock = clock or SystemClock()
        self.checkpoint_every = checkpoint_every
        self.k_events = f"{prefix}:audit:events"
        self.k_head = f"{prefix}:audit:head"
        self.k_checkpoints = f"{prefix}:audit:checkpoints"
        self.k_by_request = f"{prefix}:audit:req:"
        self._append = self.redis.register_script(_APPEND)

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()

    def _head(self) -> tuple[int, str]:
        raw = self.redis.get(self.k_head)
        if raw is None:
            return 0, GENESIS
        head = json.loads(raw)
        return int(head["seq"]), str(head["hash"])

    def append(self, event: str, *, actor: str, request_id: str | None = None,
               data: dict[str, Any] | None = None) -> AuditEvent:
        payload = json.loads(json.dumps(data or {}, default=str))  # JSON-safe and detached from the caller
        for _ in range(200):
            seq, prev = self._head()
            body = {"seq": seq + 1, "at": self.clock.now().isoformat(), "event": event, "actor": actor,
                    "request_id": request_id, "data": payload, "prev": prev}
            digest = event_hash(body)
            ev = AuditEvent(**body, hash=digest, mac=self._mac("event", digest))
            head = json.dumps({"seq": ev.seq, "hash": digest, "mac": self._mac("head", f"{ev.seq}|{digest}")})
            checkpoint = ""
            if ev.seq % self.checkpoint_every == 0:
                checkpoint = json.dumps({"seq": ev.seq, "hash": digest, "at": ev.at,
                                         "mac": self._mac("checkpoint", f"{ev.seq}|{digest}")})
            keys = [self.k_events, self.k_head, self.k_by_request + (request_id or "-"), self.k_checkpoints]
            result = self._append(keys=keys, args=[seq, ev.to_json(), head, request_id or "", checkpoint])
            if int(result) > 0:
                # One log line per audit event: logs and the audit log correlate on audit_seq / request_id.
                log.info(event, extra={"audit_seq": ev.seq, "request_id": request_id, "actor": actor})
                return ev
        raise ConflictError("audit append kept losing races")

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current head as a checkpoint (also written every `checkpoint_every` events)."""
        seq, digest = self._head()
        if seq == 0:
            return None
        cp = {"seq": seq, "hash": digest, "at": self.clock.now().isoformat(),
              "mac": self._mac("checkpoint", f"{seq}|{digest}")}
        self.redis.hset(self.k_checkpoints, seq, json.dumps(cp))
        return cp

    def count(self) -> int:
        return int(self.redis.llen(self.k_events))

    def _raw_events(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        index = start
        while end is None or index < end:
            last = index + CHUNK - 1 if end is None else min(index + CHUNK, end) - 1
            chunk = self.redis.lrange(self.k_events, index, last)
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
        out = []
        for s in seqs:
            raw = self.redis.lindex(self.k_events, s - 1)
            if raw is not None:
                out.append(AuditEvent(**json.loads(raw)))
        return out

    def export(self, since: datetime | None = None) -> Iterator[str]:
        for ev in self.events():
            if since is not None and datetime.fromisoformat(ev.at) < since:
                continue
            yield ev.to_json()

    def verify(self) -> VerifyResult:
        # One consistent snapshot of head, length and checkpoints (appends are atomic in Redis), so events that
        # a live system appends while we read are not mistaken for tampering; they are checked next time.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.k_head).llen(self.k_events).hgetall(self.k_checkpoints)
            head_raw, length, checkpoints = pipe.execute()
        prev = GENESIS
        count = 0
        for position, raw in self._raw_events(end=int(length)):
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
        hashes: dict[int, str] = {}
        cps = {int(k): json.loads(v) for k, v in checkpoints.items()}
        if cps:
            wanted = set(cps)
            for _, raw in self._raw_events(end=count):
                ev = AuditEvent(**json.loads(raw))
                if ev.seq in wanted:
                    hashes[ev.seq] = ev.hash
        for seq in sorted(cps):
            cp = cps[seq]
            if not hmac.compare_digest(str(cp.get("mac", "")), self._mac("checkpoint", f"{seq}|{cp.get('hash')}")):
                return VerifyResult(False, count, seq, "checkpoint signature invalid")
            if seq > count:
                return VerifyResult(False, count, count + 1, f"truncated: checkpoint at seq {seq} is past the end")
            if hashes.get(seq) != cp["hash"]:
                return VerifyResult(False, count, seq, "event does not match its signed checkpoint")
            checked += 1
        return VerifyResult(True, count, checkpoints=checked)
