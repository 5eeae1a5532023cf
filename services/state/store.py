"""Redis persistence: requests (with votes, grant and history), indexes, and the grant ledger.

Every state change is a compare-and-set: the caller passes a function old -> new that is re-run on fresh data
if another process changed the record in between (a Lua script replaces the record only if it still holds the
bytes that were read). Indexes are written in the same script, so a reader never sees a request in a state set
it has left.
"""

from __future__ import annotations

import json
import secrets
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from redis.exceptions import WatchError

from policies.lifecycle import State
from policies.model import ActiveGrantFact
from policies.record import RequestRecord
from services.errors import ConflictError, NotFoundError, StaleVersionError
from services.state.commit import Ops

MAX_CAS_ATTEMPTS = 50
ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: ids are typed in chat ("cancel BG-7K3F9Q")


def new_request_id() -> str:
    return "BG-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(6))


def _ts(when: datetime) -> float:
    return when.timestamp()


class Keys:
    def __init__(self, prefix: str = "bg"):
        self.p = prefix

    def request(self, rid: str) -> str:
        return f"{self.p}:req:{rid}"

    def state(self, state: State | str) -> str:
        return f"{self.p}:idx:state:{State(state).value}"

    def requester(self, oid: str) -> str:
        return f"{self.p}:idx:requester:{oid}"

    def target(self, oid: str) -> str:
        return f"{self.p}:idx:target:{oid}"

    def approver(self, oid: str) -> str:
        return f"{self.p}:idx:approver:{oid}"

    @property
    def expiry(self) -> str:
        return f"{self.p}:idx:grant_expiry"

    @property
    def approval_due(self) -> str:
        return f"{self.p}:idx:approval_due"

    @property
    def work_due(self) -> str:
        return f"{self.p}:idx:work_due"

    @property
    def step_due(self) -> str:
        """Follow-up steps (members "<request id>|<step key>") by the time the reconciler must look at them."""
        return f"{self.p}:idx:step_due"

    def draft(self, draft_id: str) -> str:
        return f"{self.p}:draft:{draft_id}"

    def seen(self, token: str) -> str:
        return f"{self.p}:seen:{token}"

    def ledger(self, principal: str, role: str, scope: str) -> str:
        return f"{self.p}:ledger:{principal}:{role}:{quote(scope, safe='')}"

    @property
    def ledgers_with_assignment(self) -> str:
        return f"{self.p}:idx:ledger_assigned"

    def kv(self, kind: str, key: str) -> str:
        return f"{self.p}:{kind}:{key}"


@dataclass(frozen=True)
class LedgerState:
    key: str
    generation: int
    assignment_id: str | None
    mode: str | None
    holders: dict[str, float] = field(default_factory=dict)  # request id -> ends_at epoch seconds
    # "<request id>:<generation>" while the last holder's revoke is removing the assignment from Graph: a new
    # holder must not share it (it is about to disappear) but wait until ledger_cleared.
    removing: str | None = None

    @property
    def latest_end(self) -> float | None:
        return max(self.holders.values()) if self.holders else None


@dataclass(frozen=True)
class Release:
    """What ending one holder means for the Graph assignment."""

    remove_assignment: bool
    stale: bool  # the request did not hold this ledger (old job, or already released)
    remaining: dict[str, float]
    generation: int
    assignment_id: str | None


# A record is ~5 KB of JSON (the decision with every rule in words, the full history, votes, card copies) and
# Redis keeps one per request. Most of it (field names, rule sentences, ids of the roles) is the same in every
# record, so it is deflated against a preset dictionary, a typical record: ~4-5x smaller than zlib alone. Frozen:
# records can only be read with the dictionary they were written with; a new one needs a new marker byte.
RECORD_DICT_V1 = (Path(__file__).parent / "record-dict-v1.json").read_bytes()
_V1 = b"\x01"  # never the first byte of a zlib stream (0x78 and friends) or of JSON ("{")


def encode(record: RequestRecord) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=RECORD_DICT_V1)
    return _V1 + deflate.compress(record.model_dump_json().encode()) + deflate.flush()


def decode(raw: bytes | str) -> RequestRecord:
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if data.startswith(_V1):
        inflate = zlib.decompressobj(-15, zdict=RECORD_DICT_V1)
        data = inflate.decompress(data[1:]) + inflate.flush()
    elif not data.startswith(b"{"):  # plain zlib, or plain JSON, as earlier versions wrote them
        data = zlib.decompress(data)
    return RequestRecord.model_validate_json(data)


# The record is replaced, and its index entries written, only if it is still exactly the bytes the caller read: a
# compare-and-set in two round trips (GET, then this) where WATCH/GET/MULTI…EXEC takes three.
_REPLACE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
local a = 3
for k = 2, #KEYS do
  local op = ARGV[a]
  if op == 'ZADD' then
    redis.call('ZADD', KEYS[k], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  else
    redis.call(op, KEYS[k], ARGV[a + 1])
    a = a + 2
  end
end
return 1
"""


class _IndexWrites:
    """Collects RequestStore._index's writes (one key each) as arguments for _REPLACE."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def _add(self, key: str, *args: Any) -> None:
        self.keys.append(key)
        self.args += args

    def sadd(self, key: str, member: str) -> None:
        self._add(key, "SADD", member)

    def srem(self, key: str, member: str) -> None:
        self._add(key, "SREM", member)

    def zrem(self, key: str, member: str) -> None:
        self._add(key, "ZREM", member)

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        for member, score in mapping.items():
            self._add(key, "ZADD", repr(float(score)), member)


# A request in a working state (State.working) is checked this long after it entered it (then as the reconciler
# decides): a tenth of the reconciler period by default, so a lost job is re-driven at the first tick after that.
WORK_GRACE = timedelta(seconds=3)


class RequestStore:
    def __init__(self, client: redis.Redis, prefix: str = "bg", work_grace: timedelta = WORK_GRACE):
        self.redis = client
        self.keys = Keys(prefix)
        self.work_grace = work_grace
        self._replace = client.register_script(_REPLACE)

    # --- requests ------------------------------------------------------------------------------------------

    def get(self, request_id: str) -> RequestRecord | None:
        raw = self.redis.get(self.keys.request(request_id))
        return decode(raw) if raw is not None else None

    def require(self, request_id: str) -> RequestRecord:
        record = self.get(request_id)
        if record is None:
            raise NotFoundError(f"no request {request_id}")
        return record

    def get_many(self, ids: Iterable[str]) -> list[RequestRecord]:
        ids = list(ids)
        if not ids:
            return []
        raws = self.redis.mget([self.keys.request(i) for i in ids])
        return [decode(r) for r in raws if r is not None]

    def create(self, record: RequestRecord, draft_id: str | None = None) -> RequestRecord:
        """Insert a new request. With a draft id, a second submit of the same form returns the first request."""
        key = self.keys.request(record.id)
        with self.redis.pipeline() as pipe:
            for _ in range(MAX_CAS_ATTEMPTS):
                try:
                    watched = [key] + ([self.keys.draft(draft_id)] if draft_id else [])
                    pipe.watch(*watched)
                    if draft_id:
                        existing = pipe.get(self.keys.draft(draft_id))
                        if existing is not None:
                            pipe.unwatch()
                            return self.require(existing.decode())
                    if pipe.exists(key):
                        raise ConflictError(f"request {record.id} already exists")
                    pipe.multi()
                    pipe.set(key, encode(record))
                    if draft_id:
                        pipe.set(self.keys.draft(draft_id), record.id, ex=7 * 86400)
                    created = _ts(record.created_at)
                    pipe.zadd(self.keys.requester(record.request.requester), {record.id: created})
                    pipe.zadd(self.keys.target(record.request.target), {record.id: created})
                    self._index(pipe, None, record)
                    pipe.execute()
                    return record
                except WatchError:
                    continue
        raise ConflictError(f"could not create request {record.id}")

    def update(self, request_id: str, change: Callable[[RequestRecord], RequestRecord], *,
               expected_version: int | None = None) -> RequestRecord:
        """Compare-and-set. `change` may raise (e.g. InvalidTransitionError); then nothing is written.
        Returning the record unchanged is a no-op."""
        return self.update_peeking(request_id, change, None, expected_version=expected_version)[0]

    def update_peeking(self, request_id: str, change: Callable[[RequestRecord], RequestRecord], peek: str | None,
                       *, expected_version: int | None = None) -> tuple[RequestRecord, bytes | None]:
        """update(), also reading the key `peek` in the same round trip as the record (the audit head its caller
        appends to next). The value is as it was before the write and may be stale by the time it is used."""
        key = self.keys.request(request_id)
        peeked = None
        for _ in range(MAX_CAS_ATTEMPTS):
            if peek is None:
                raw = self.redis.get(key)
            else:
                raw, peeked = self.redis.mget(key, peek)
            if raw is None:
                raise NotFoundError(f"no request {request_id}")
            old = decode(raw)
            if expected_version is not None and old.version != expected_version:
                raise StaleVersionError(request_id, expected_version, old.version)
            new = change(old)
            if new is old or new == old:
                return old, peeked
            if new.version <= old.version:
                raise ConflictError("a change must bump the record version")
            index = _IndexWrites()
            self._index(index, old, new)
            if self._replace(keys=[key, *index.keys], args=[raw, encode(new), *index.args]):
                return new, peeked
        raise ConflictError(f"request {request_id} kept changing; gave up after {MAX_CAS_ATTEMPTS} attempts")

    def read(self, request_id: str, peek: str) -> tuple[bytes | None, bytes | None]:
        """The record's bytes and the key `peek` (the audit head) in one round trip, for a Commit."""
        raw, peeked = self.redis.mget(self.keys.request(request_id), peek)
        return raw, peeked

    def replace_ops(self, old: RequestRecord, new: RequestRecord) -> Ops:
        """The writes that replace `old` with `new` (the record and its index entries), for a Commit whose
        compare-and-set guards them."""
        if new.version <= old.version:
            raise ConflictError("a change must bump the record version")
        ops = Ops().add("SET", self.keys.request(new.id), encode(new))
        self._index(ops, old, new)
        return ops

    def _index(self, pipe: Any, old: RequestRecord | None, new: RequestRecord) -> None:
        k = self.keys
        if old is None or old.state != new.state:
            if old is not None:
                pipe.srem(k.state(old.state), new.id)
            pipe.sadd(k.state(new.state), new.id)
        pending = new.state is State.PENDING_APPROVAL
        for approver in new.decision.approvers:
            if pending:
                pipe.sadd(k.approver(approver.object_id), new.id)
            else:
                pipe.srem(k.approver(approver.object_id), new.id)
        if pending:
            due = new.approval_deadline if new.escalated_at or new.escalation_due is None else new.escalation_due
            if due is not None:
                pipe.zadd(k.approval_due, {new.id: _ts(due)})
        else:
            pipe.zrem(k.approval_due, new.id)
        if new.state.holds_access and new.grant is not None:
            pipe.zadd(k.expiry, {new.id: _ts(new.grant.ends_at)})
        elif not new.state.holds_access:
            pipe.zrem(k.expiry, new.id)
        # Every move within or into a working state (a retry re-entering ACTIVATING too) starts a new deadline.
        if new.state.working:
            pipe.zadd(k.work_due, {new.id: _ts(new.updated_at + self.work_grace)})
        elif old is not None and old.state.working:
            pipe.zrem(k.work_due, new.id)
        self._index_steps(pipe, old, new)

    def _index_steps(self, pipe: Any, old: RequestRecord | None, new: RequestRecord) -> None:
        """Follow-up steps have deadlines like working states. Entering ACTIVE, and ending after a grant, leaves a
        marker (`plan-granted`, `plan-ended`) in the same write: its planning job is then owed, and re-driven if it is
        lost, until the plan is recorded as a done step."""
        k = self.keys
        if old is not None and old.state != new.state:
            marker = None
            if new.state is State.ACTIVE:
                marker = "plan-granted"
            elif old.state is State.REVOKING and new.state in (State.EXPIRED, State.REVOKED):
                marker = "plan-ended"
            if marker is not None and new.step(marker) is None:
                pipe.zadd(k.step_due, {f"{new.id}|{marker}": _ts(new.updated_at + self.work_grace)})
        for step in new.steps:
            before = old.step(step.key) if old is not None else None
            if step.pending:
                if before is None or before != step:
                    pipe.zadd(k.step_due, {f"{new.id}|{step.key}": _ts(step.deadline)})
            elif before is None or before.pending:
                pipe.zrem(k.step_due, f"{new.id}|{step.key}")

    # --- queries -------------------------------------------------------------------------------------------

    def ids_in_state(self, state: State) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(self.keys.state(state)))

    def in_state(self, state: State) -> list[RequestRecord]:
        return self.get_many(self.ids_in_state(state))

    def count_in_state(self, state: State) -> int:
        return int(self.redis.scard(self.keys.state(state)))

    def by_requester(self, oid: str, limit: int = 20) -> list[RequestRecord]:
        ids = [m.decode() for m in self.redis.zrevrange(self.keys.requester(oid.lower()), 0, limit - 1)]
        return self.get_many(ids)

    def by_target(self, oid: str, limit: int = 50) -> list[RequestRecord]:
        ids = [m.decode() for m in self.redis.zrevrange(self.keys.target(oid.lower()), 0, limit - 1)]
        return self.get_many(ids)

    def pending_for_approver(self, oid: str) -> list[RequestRecord]:
        ids = sorted(m.decode() for m in self.redis.smembers(self.keys.approver(oid.lower())))
        return [r for r in self.get_many(ids) if r.state is State.PENDING_APPROVAL]

    def open_grants_of(self, oid: str) -> list[ActiveGrantFact]:
        """What the target already holds or is about to hold: facts for the concurrency rules."""
        out = []
        for r in self.by_target(oid, limit=200):
            if r.state in {State.PENDING_APPROVAL, State.APPROVED, State.ACTIVATING, State.ACTIVE, State.REVOKING}:
                # A bundle is one fact per member (so asking for a role a bundle holds is "the same role"); the
                # concurrency limit counts requests, not members.
                for entitlement in [m.entitlement for m in r.decision.members] or [r.request.entitlement]:
                    out.append(ActiveGrantFact(request_id=r.id, entitlement=entitlement, state=r.state.value,
                                               ends_at=r.grant.ends_at if r.grant else None))
        return out

    def due_expiries(self, now: datetime, limit: int = 1000) -> list[tuple[str, float]]:
        """Grants whose end has passed: an indexed range query, so the cost grows with what is due, not with
        the number of active grants."""
        rows = self.redis.zrangebyscore(self.keys.expiry, "-inf", _ts(now), start=0, num=limit, withscores=True)
        return [(m.decode(), float(s)) for m, s in rows]

    def expiry_of(self, request_id: str) -> float | None:
        score = self.redis.zscore(self.keys.expiry, request_id)
        return float(score) if score is not None else None

    def count_active_grants(self) -> int:
        return int(self.redis.zcard(self.keys.expiry))

    def due_approvals(self, now: datetime, limit: int = 500) -> list[str]:
        rows = self.redis.zrangebyscore(self.keys.approval_due, "-inf", _ts(now), start=0, num=limit)
        return [m.decode() for m in rows]

    def due_work(self, now: datetime, limit: int = 500) -> list[str]:
        """Requests in a working state past their deadline: a range over the deadline index."""
        rows = self.redis.zrangebyscore(self.keys.work_due, "-inf", _ts(now), start=0, num=limit)
        return [m.decode() for m in rows]

    def due_steps(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(request id, step key) of follow-up steps past their deadline."""
        rows = self.redis.zrangebyscore(self.keys.step_due, "-inf", _ts(now), start=0, num=limit)
        return [tuple(m.decode().split("|", 1)) for m in rows]  # type: ignore[misc]

    def next_step_check(self, members: list[tuple[str, str]], at: datetime) -> None:
        if members:
            self.redis.zadd(self.keys.step_due, {f"{r}|{k}": _ts(at) for r, k in members}, xx=True)

    def drop_step(self, request_id: str, key: str) -> None:
        self.redis.zrem(self.keys.step_due, f"{request_id}|{key}")

    def work_deadline(self, request_id: str) -> float | None:
        score = self.redis.zscore(self.keys.work_due, request_id)
        return float(score) if score is not None else None

    def next_work_check(self, request_ids: list[str], at: datetime) -> None:
        """Move working requests' deadlines (XX: never brings back one that left its working state meanwhile)."""
        if request_ids:
            self.redis.zadd(self.keys.work_due, dict.fromkeys(request_ids, _ts(at)), xx=True)

    def drop_work(self, request_id: str) -> None:
        self.redis.zrem(self.keys.work_due, request_id)

    def index_working(self) -> int:
        """Once per Redis: put requests that were in a working state before the deadline index existed into it."""
        if not self.redis.set(f"{self.keys.work_due}:built", b"1", nx=True):
            return 0
        added = 0
        for state in (State.APPROVED, State.ACTIVATING, State.REVOKING):
            for record in self.in_state(state):
                added += self.redis.zadd(self.keys.work_due, {record.id: _ts(record.updated_at + self.work_grace)},
                                         nx=True)
        return added

    # --- idempotency -----------------------------------------------------------------------------------------

    def first_time(self, token: str, ttl_s: int = 86400) -> bool:
        """True the first time a token (a Teams activity id, a webhook delivery id) is seen."""
        return bool(self.redis.set(self.keys.seen(token), b"1", nx=True, ex=ttl_s))

    # --- small documents (conversation references, user directory cache) -----------------------------------

    def put_draft(self, owner: str, draft_id: str, meta: dict[str, Any], ttl_s: int, keep: int) -> None:
        """A form's draft metadata, at most `keep` per person: the newest are kept, older ones are deleted, so one
        person's flood of messages costs a bounded amount of Redis."""
        drafts = self.keys.kv("drafts-of", owner.lower())
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.kv("draft-meta", draft_id), json.dumps(meta, sort_keys=True), ex=ttl_s)
            pipe.lpush(drafts, draft_id)
            pipe.lrange(drafts, keep, -1)
            pipe.ltrim(drafts, 0, keep - 1)
            pipe.expire(drafts, ttl_s)
            evicted = pipe.execute()[2]
        if evicted:
            self.redis.delete(*(self.keys.kv("draft-meta", d.decode()) for d in evicted))

    def put_doc(self, kind: str, key: str, value: dict[str, Any], ttl_s: int | None = None) -> None:
        self.redis.set(self.keys.kv(kind, key), json.dumps(value, sort_keys=True), ex=ttl_s)

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.keys.kv(kind, key))
        return json.loads(raw) if raw is not None else None

    # --- grant ledger ---------------------------------------------------------------------------------------

    def ledger(self, principal: str, role: str, scope: str = "/") -> LedgerState:
        key = self.keys.ledger(principal.lower(), role.lower(), scope)
        return self._read_ledger(self.redis, key)

    def _read_ledger(self, conn: Any, key: str) -> LedgerState:
        return self._ledger_state(key, conn.hgetall(key), conn.zrange(key + ":holders", 0, -1, withscores=True))

    @staticmethod
    def _ledger_state(key: str, raw: dict[bytes, bytes], holders: list[tuple[bytes, float]]) -> LedgerState:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return LedgerState(key=key, generation=int(data.get("generation", 0)),
                           assignment_id=data.get("assignment_id") or None, mode=data.get("mode") or None,
                           holders={m.decode(): float(s) for m, s in holders}, removing=data.get("removing") or None)

    def _ledger_cas(self, principal: str, role: str, scope: str,
                    change: Callable[[LedgerState, Any], Any]) -> Any:
        key = self.keys.ledger(principal.lower(), role.lower(), scope)
        with self.redis.pipeline() as pipe:
            for _ in range(MAX_CAS_ATTEMPTS):
                try:
                    pipe.watch(key, key + ":holders")
                    state = self._read_ledger(pipe, key)
                    pipe.multi()
                    result = change(state, pipe)
                    pipe.execute()
                    return result
                except WatchError:
                    continue
        raise ConflictError(f"ledger {key} kept changing")

    def ledger_hold(self, principal: str, role: str, scope: str, request_id: str, ends_at: datetime) -> LedgerState:
        """Register a request as a holder of (principal, role, scope); returns the ledger as it now is (one
        transaction that writes, then reads: no WATCH round trips needed)."""
        key = self.keys.ledger(principal.lower(), role.lower(), scope)
        with self.redis.pipeline() as pipe:
            pipe.zadd(key + ":holders", {request_id: _ts(ends_at)})
            pipe.hgetall(key)
            pipe.zrange(key + ":holders", 0, -1, withscores=True)
            _, raw, holders = pipe.execute()
        return self._ledger_state(key, raw, holders)

    def ledger_assigned(self, principal: str, role: str, scope: str, assignment_id: str, mode: str,
                        *, new_assignment: bool) -> int:
        """Record the Graph assignment backing the ledger; a newly created one starts a new generation."""

        def change(state: LedgerState, pipe: Any) -> int:
            generation = state.generation + 1 if new_assignment or state.generation == 0 else state.generation
            pipe.hset(state.key, mapping={"generation": generation, "assignment_id": assignment_id, "mode": mode,
                                          "updated_at": datetime.now(UTC).isoformat()})
            pipe.sadd(self.keys.ledgers_with_assignment, state.key)
            return generation

        return self._ledger_cas(principal, role, scope, change)

    def ledger_release(self, principal: str, role: str, scope: str, request_id: str, generation: int) -> Release:
        """End one holder. The assignment may be removed only if nobody else holds it AND it is still the
        generation this request was granted in: an old revoke can never remove a newer grant. Deciding to remove
        marks the ledger "removing" in the same transaction, so a grant arriving meanwhile waits instead of
        sharing an assignment that is about to go; a retried revoke whose removal is still pending gets the same
        answer again."""
        mine = f"{request_id}:{generation}"

        def change(state: LedgerState, pipe: Any) -> Release:
            if request_id not in state.holders:
                pending = state.removing == mine and state.assignment_id is not None
                return Release(pending, not pending, state.holders, state.generation, state.assignment_id)
            remaining = {k: v for k, v in state.holders.items() if k != request_id}
            pipe.zrem(state.key + ":holders", request_id)
            same_generation = state.generation == generation
            remove = not remaining and same_generation and state.assignment_id is not None
            if remove:
                pipe.hset(state.key, "removing", mine)
            return Release(remove, not same_generation, remaining, state.generation, state.assignment_id)

        return self._ledger_cas(principal, role, scope, change)

    def ledger_cleared(self, principal: str, role: str, scope: str, generation: int) -> bool:
        """After Graph confirmed removal: forget the assignment unless a newer generation replaced it."""

        def change(state: LedgerState, pipe: Any) -> bool:
            # New holders may be waiting for exactly this removal; otherwise nobody may hold it any more.
            if state.generation != generation or (state.holders and not state.removing):
                return False
            pipe.hdel(state.key, "assignment_id", "mode", "removing")
            pipe.srem(self.keys.ledgers_with_assignment, state.key)
            return True

        return self._ledger_cas(principal, role, scope, change)

    def ledgers_with_assignment(self) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(self.keys.ledgers_with_assignment))

    def read_ledger_key(self, key: str) -> LedgerState:
        return self._read_ledger(self.redis, key)
