"""The usage report (`breakglass report`) over a year of audit events: a log of `report_events` events (100,000 in
a full run) written through the product's own AuditLog (HMAC, hash chain, sealed segments), shaped like real
requests (submission, decision, approval, grant, receipts, card updates, expiry), then the report built as the CLI
builds it, three times."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from bench.core import Ctx, Row
from policies.document import PolicyDocument
from services.clock import FixedClock
from services.state.audit import AuditLog
from services.state.policy_source import default_policy_path, read_policy
from services.state.store import RequestStore
from services.workflow.usage import usage_report

KEY = b"bench-audit-key-0123456789abcdef0123456789"
PREFIX = "bench-report"
GOAL_S = 10.0
ROLES = ("user-admin", "helpdesk-admin", "security-admin", "global-admin", "conditional-access-admin")


def populate(client: redis.Redis, events: int, now: datetime) -> AuditLog:
    """About a year of requests ending at `now`, twelve events each, by 300 people."""
    clock = FixedClock(now - timedelta(days=365))
    audit = AuditLog(client, KEY, prefix=PREFIX, clock=clock)
    step = timedelta(days=365) / max(1, events // 12)
    n = 0
    while audit.count() + 12 <= events:
        n += 1
        rid = f"BG-R{n:05d}"
        person = f"dddddddd-0000-0000-0000-{n % 300:012d}"
        approver = f"cccccccc-0000-0000-0000-{2 + n % 3:012d}"
        role = ROLES[n % len(ROLES)]
        human = role in ("security-admin", "global-admin", "conditional-access-admin")
        starts = clock.now() + timedelta(seconds=30)
        ends = starts + timedelta(minutes=30 + 30 * (n % 4))
        a: Any = audit.append
        a("request.submitted", actor=person, request_id=rid, data={
            "requester": person, "target": person, "entitlement": role, "duration": int((ends - starts).seconds),
            "ticket": "INC0012345", "justification": "Restore the deleted accounts of the finance team"})
        a("request.decided", actor="system:policy", request_id=rid, data={
            "outcome": "needs_approval" if human else "auto_approve", "lane": None,
            "flags": ["unusual_timing"] if n % 7 == 0 else [], "reasons": [], "rules": []})
        a("approval.requested", actor="system:notifier", request_id=rid, data={"notified": [approver]})
        a("request.approved" if human else "cards.updated", actor=approver, request_id=rid, data={"version": 2})
        a("grant.requested", actor="system:worker", request_id=rid, data={"mode": "pim"})
        a("grant.activated", actor="system:worker", request_id=rid,
          data={"starts_at": starts.isoformat(), "ends_at": ends.isoformat(), "mode": "pim"})
        for part in ("ticket_note", "ticket_evidence", "channel"):
            a("receipt.posted", actor="system:receipts", request_id=rid, data={"kind": "activated", "part": part})
        a("cards.updated", actor="system:notifier", request_id=rid, data={"state": "active"})
        clock.set(ends)
        a("grant.revoke_requested", actor="system:worker", request_id=rid, data={"reason": "expired"})
        a("grant.expired", actor="system:worker", request_id=rid, data={"removed_in_graph": True})
        clock.set(starts - timedelta(seconds=30) + step)
    while audit.count() < events:
        audit.append("reconciler.acted", actor="system:reconciler", data={})
    return audit


def measure_report(ctx: Ctx) -> list[Row]:
    client = ctx.stack.redis.client(9)
    client.flushdb()
    client.config_set("appendonly", "no")  # the log's bytes, not their AOF, are what is measured
    now = datetime.now(UTC)
    began = time.monotonic()
    audit = populate(client, ctx.sizes.report_events, now)
    ctx.log(f"  {audit.count():,} audit events written in {time.monotonic() - began:.0f}s")
    policy: PolicyDocument = read_policy(default_policy_path())
    store = RequestStore(client, prefix=PREFIX)
    seconds = []
    lines = 0
    for _ in range(3):
        t0 = time.perf_counter()
        report, _ = usage_report(audit, store, policy, since=now - timedelta(days=365), until=now)
        seconds.append(time.perf_counter() - t0)
        lines = len(report.lines)
    client.flushdb()
    client.config_set("appendonly", "yes")
    events = ctx.sizes.report_events
    return [Row(key="usage_report", title=f"Usage report over {events:,} audit events (`breakglass report`)",
                unit="s", values=seconds, goal=f"≤ {GOAL_S:g} s at 100,000 events",
                passed=max(seconds) <= GOAL_S * events / 100_000, sample="repetition",
                how="the whole log read through AuditLog.events (sealed segments decompressed), one pass",
                detail={"events": events, "lines": lines})]
