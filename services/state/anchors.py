"""Anchors for the audit log outside its own Redis keys, and the checks `audit verify` makes with them.

The hash chain proves that the events in Redis are the ones breakglass wrote, in order; it cannot prove that none
are missing at the end, because an attacker of Redis can delete every `audit:*` key (an empty log is a valid log)
or restore an older DUMP of them (a shorter log is a valid log). Two things outside the log say how far it reached:

- **Signed checkpoints outside Redis** (seq, head hash, time, HMAC with the audit key): appended as one JSON line to
  `BREAKGLASS_AUDIT_ANCHOR_FILE` for every grant and revocation outcome and every `checkpoint_every` events, and
  put in each evidence pack on the ticket. The log must still reach every one of them, with the same hash.
- **The rest of the state in Redis**: a request record, a ledger holder, a state index entry or a per-request audit
  index names a request the log must have events for; a request that is active, expired or revoked must have the
  `grant.activated` / `grant.expired` / `grant.revoked` event written before its state moved.

Several processes append to the anchor file at once: each line is one `write()` on an O_APPEND descriptor, which
POSIX keeps whole on a local file system (not on NFS or SMB: keep the file local to each host, or per process).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.lifecycle import State
from services.state.audit import AuditEvent, AuditLog, VerifyResult
from services.state.store import RequestStore, decode

log = logging.getLogger(__name__)

# The event that must precede each state: the workflow appends it before it moves the record.
REQUIRED: dict[State, tuple[str, ...]] = {
    State.ACTIVE: ("grant.activated",),
    State.REVOKING: ("grant.activated",),
    State.EXPIRED: ("grant.activated", "grant.expired"),
    State.REVOKED: ("grant.activated", "grant.revoked"),
}


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    mac: str
    source: str  # "file:line", for the message

    @classmethod
    def parse(cls, data: Any, source: str) -> Checkpoint:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(seq=int(data["seq"]), hash=str(data["hash"]), at=str(data.get("at") or ""),
                   mac=str(data["mac"]), source=source)


@dataclass(frozen=True)
class AnchorLine:
    number: int
    checkpoint: Checkpoint | None
    problem: str = ""


class AnchorFile:
    """Signed checkpoints, one JSON object per line, append-only."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, checkpoint: dict[str, Any]) -> None:
        line = (json.dumps({k: checkpoint[k] for k in ("seq", "hash", "at", "mac")}, separators=(",", ":"))
                + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, line)  # one write: appended whole, never interleaved with another process's
        finally:
            os.close(fd)
        if written != len(line):
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")

    def read(self) -> list[AnchorLine]:
        """Every line; none before the first anchored event has created the file."""
        out: list[AnchorLine] = []
        if not self.path.exists():
            return out
        with self.path.open(encoding="utf-8") as fh:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                source = f"{self.path}:{number}"
                try:
                    out.append(AnchorLine(number, Checkpoint.parse(json.loads(text), source)))
                except (ValueError, KeyError, TypeError) as exc:
                    out.append(AnchorLine(number, None, f"{source} is unreadable ({type(exc).__name__})"))
        return out

    def checkpoints(self) -> list[Checkpoint]:
        return [line.checkpoint for line in self.read() if line.checkpoint is not None]


def read_anchors(path: Path) -> tuple[list[Checkpoint], list[str]]:
    """Checkpoints from an anchor file (JSON lines) or from an evidence pack (its `checkpoint`); and problems."""
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict) and "checkpoint" in whole:  # an evidence pack downloaded from the ticket
        try:
            return [Checkpoint.parse(whole["checkpoint"], f"{path} (evidence pack)")], []
        except (ValueError, KeyError, TypeError):
            return [], [f"{path}: the evidence pack's checkpoint is unreadable"]
    lines = AnchorFile(path).read()
    return ([line.checkpoint for line in lines if line.checkpoint is not None],
            [line.problem for line in lines if line.problem])


# --- verify ---------------------------------------------------------------------------------------------------

@dataclass
class _Seen:
    """What the state in Redis says the log must contain, read before the log itself."""

    requests: dict[str, tuple[State | None, str]]  # request id -> (its state if a record was read, where found)
    indexed: dict[str, list[int]]  # per-request audit index: id -> seqs


def _scan_state(store: RequestStore, audit: AuditLog) -> _Seen:
    client, p = store.redis, store.keys.p
    requests: dict[str, tuple[State | None, str]] = {}
    keys = [k.decode() for k in client.scan_iter(match=f"{p}:req:*", count=1000)]
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        for key, raw in zip(chunk, client.mget(chunk), strict=True):
            if raw is None:
                continue
            try:
                record = decode(raw)
            except ValueError:
                requests[key.split(":req:", 1)[1]] = (None, "an unreadable request record")
                continue
            requests[record.id] = (record.state, "its request record")
    for state in State:
        for member in client.smembers(store.keys.state(state)):
            requests.setdefault(member.decode(), (None, f"the {state.value} index"))
    for key in client.scan_iter(match=f"{p}:ledger:*:holders", count=1000):
        for member in client.zrange(key, 0, -1):
            requests.setdefault(member.decode(), (None, "a grant ledger entry"))
    indexed: dict[str, list[int]] = {}
    for key in client.scan_iter(match=f"{audit.k_by_request}*", count=1000):
        rid = key.decode()[len(audit.k_by_request):]
        if rid != "-":
            indexed[rid] = [int(s) for s in client.lrange(key, 0, -1)]
            requests.setdefault(rid, (None, "its per-request audit index"))
    return _Seen(requests, indexed)


def _signed(audit: AuditLog, cp: Checkpoint) -> bool:
    return hmac.compare_digest(cp.mac, audit._mac("checkpoint", f"{cp.seq}|{cp.hash}"))


def verify_everything(store: RequestStore, audit: AuditLog, anchors: Sequence[Checkpoint] = (), *,
                      anchor_problems: Iterable[str] = ()) -> VerifyResult:
    """The chain, then whether the log still reaches every anchor, then whether it holds the events the rest of
    Redis says happened. The state is read before the log, so an event a state needs (appended before the state
    moved) is in the snapshot; a record is created a moment before its first event, so a request with none in the
    snapshot is looked up again afterwards, and only genuine (hashed and signed) events count."""
    problems = list(anchor_problems)
    if problems:
        return VerifyResult(False, 0, None, problems[0])
    seen = _scan_state(store, audit)
    events: dict[str, set[str]] = defaultdict(set)
    at_seq: dict[int, str | None] = {}

    def collect(ev: AuditEvent) -> None:
        if ev.request_id:
            events[ev.request_id].add(ev.event)
        at_seq[ev.seq] = ev.request_id

    hashes: dict[int, str] = {}
    result = audit.verify(collect=collect, hashes=hashes, want={cp.seq for cp in anchors})
    if not result.ok:
        return result
    anchored = _check_anchors(audit, anchors, result, hashes)
    if anchored is not None:
        return anchored
    missing = _check_state(seen, events, at_seq, result.count)
    if missing:
        missing = [m for m in missing if not _appended_since(audit, m[0], m[2])]
    if missing:
        _, problem, _ = missing[0]
        others = [rid for rid, _, _ in missing[1:]]
        more = (f" (also {', '.join(others[:5])}" + (f" and {len(others) - 5} more" if len(others) > 5 else "")
                + ")") if others else ""
        return VerifyResult(False, result.count, None, f"{problem}{more}: the audit log was wiped or rolled back, "
                                                       "or events were deleted")
    return VerifyResult(True, result.count, checkpoints=result.checkpoints, anchors=len(anchors),
                        requests=len(seen.requests))


def _check_anchors(audit: AuditLog, anchors: Sequence[Checkpoint], result: VerifyResult,
                   hashes: dict[int, str]) -> VerifyResult | None:
    for cp in sorted(anchors, key=lambda c: c.seq):
        if not _signed(audit, cp):
            return VerifyResult(False, result.count, None, f"{cp.source}: the anchor's signature is invalid (not "
                                                           "written by breakglass with this audit key)")
    for cp in sorted(anchors, key=lambda c: c.seq, reverse=True):
        if cp.seq > result.count:
            return VerifyResult(False, result.count, result.count + 1,
                                f"the log ends at seq {result.count} but the anchor {cp.source} holds a signed "
                                f"checkpoint at seq {cp.seq} ({cp.at}): events were deleted, or the log was wiped "
                                "or rolled back")
        if hashes.get(cp.seq) != cp.hash:
            return VerifyResult(False, result.count, cp.seq,
                                f"event {cp.seq} is not the one the anchor {cp.source} signed ({cp.at}): the log was "
                                "rewritten or rolled back")
    return None


def _check_state(seen: _Seen, events: dict[str, set[str]], at_seq: dict[int, str | None],
                 count: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """(request id, what is wrong, the events that would settle it) for every request the log is short of."""
    missing = []
    for rid, seqs in seen.indexed.items():
        bad = [s for s in seqs if s > count or at_seq.get(s) != rid]
        if bad:
            missing.append((rid, f"the per-request audit index of {rid} points at seq {bad[0]}, which is "
                                 + ("past the end of the log" if bad[0] > count else "another request's event"),
                            ("*index*",)))
    for rid, (state, where) in sorted(seen.requests.items()):
        have = events.get(rid, set())
        if not have:
            missing.append((rid, f"request {rid} ({where}) has no audit events", ("*any*",)))
            continue
        needed = tuple(e for e in REQUIRED.get(state, ()) if e not in have) if state is not None else ()
        if needed:
            missing.append((rid, f"request {rid} is {state.value} but its {', '.join(needed)} event is missing",
                            needed))
    return missing


def _appended_since(audit: AuditLog, rid: str, needed: tuple[str, ...]) -> bool:
    """Events appended after the snapshot (a live system): read them now, and count only genuine ones."""
    if needed == ("*index*",):
        return False
    genuine = {ev.event for ev in audit.for_request(rid) if audit.genuine(ev)}
    return bool(genuine) if needed == ("*any*",) else all(e in genuine for e in needed)
