"""Revocation lateness (staggered, and among 10,000 active grants), Redis memory at 10,000 active grants, and
1,000 grants expiring in the same second against a throttling Graph.

Revocation measurements run in `direct` grant mode: there breakglass's own removal is the only expiry (in `pim`
mode Entra ends the assignment itself at the same moment), so a late removal is real exposure. Lateness is the
Graph emulator's arrival time of the removal (DELETE roleAssignments/{id}) minus the grant's end.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import redis

from bench.core import Ctx, Row, mb, wait_idle
from bench.env import ProductConfig, wait_until
from bench.m_latency import wait_active
from bench.population import (
    Requests,
    bench_services,
    ends_spread,
    graph_assignments,
    synthetic_grants,
    synthetic_users,
)
from bench.stats import percentile
from policies.lifecycle import State
from policies.model import GrantMode

DIRECT = {"BREAKGLASS_GRANT_MODE": "direct"}


def removal_times(ctx: Ctx) -> dict[str, tuple[float, int]]:
    """assignment id -> (arrival time, status) of the first DELETE of it at the Graph emulator."""
    found: dict[str, tuple[float, int]] = {}
    for call in ctx.stack.emulators.calls("graph", "roleManagement/directory/roleAssignments/", "DELETE"):
        assignment = call["path"].rsplit("/", 1)[-1]
        found.setdefault(assignment, (float(call["time"]), int(call.get("status") or 0)))
    return found


def lateness_of(ctx: Ctx, services: Any, request_ids: list[str]) -> tuple[list[float], list[str], list[float]]:
    """(lateness s per grant from the Graph call log, request ids never removed, product-reported lateness s)."""
    removals = removal_times(ctx)
    clock = services.runtime.clock
    late, missing, reported = [], [], []
    for record in services.runtime.store.get_many(request_ids):
        assert record.grant is not None
        end = clock.to_real(record.grant.ends_at).timestamp()
        hit = removals.get(record.grant.assignment_id or "")
        if hit is None:
            missing.append(record.id)
        else:
            late.append(hit[0] - end)
        for event in services.runtime.audit.for_request(record.id):
            if event.event in {"grant.expired", "grant.revoked"}:
                reported.append(float(event.data.get("late_seconds", math.nan)))
    return late, missing, reported


def wait_ended(services: Any, request_ids: list[str], timeout: float) -> None:
    store = services.runtime.store

    def done() -> bool:
        return all(r.state in {State.EXPIRED, State.REVOKED, State.FAILED} for r in store.get_many(request_ids))

    try:
        wait_until(done, timeout, "the grants to end", interval=0.5)
    except TimeoutError:
        pass  # reported as missing removals


def lateness_row(key: str, title: str, late: list[float], missing: list[str], how: str,
                 detail: dict[str, Any]) -> Row:
    passed = not missing and bool(late) and percentile(late, 50) <= 1.0 and percentile(late, 99) <= 2.0
    return Row(key, title, "s", late, "p50 ≤ 1 s, p99 ≤ 2 s", passed, how=how,
               detail={"never_removed": missing, **detail})


def measure_lateness(ctx: Ctx) -> list[Row]:
    sizes = ctx.sizes
    product = ctx.stack.fresh(ProductConfig(env=DIRECT))
    services = bench_services(product)
    requests = Requests(services)
    client = ctx.stack.redis.client()
    pending = [requests.submit(n, sizes.stagger_grant_s) for n in ctx.users(sizes.stagger_grants)]
    wait_idle(client, settle=0.5)
    start = time.monotonic()
    ctx.log(f"  approving {len(pending)} grants of {sizes.stagger_grant_s}s, one every {sizes.stagger_every_s}s")
    for i, record in enumerate(pending):
        delay = start + i * sizes.stagger_every_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        requests.approve(record.id)
    ids = [r.id for r in pending]
    wait_ended(services, ids, sizes.stagger_grant_s + 120)
    wait_idle(client, timeout=120)
    late, missing, reported = lateness_of(ctx, services, ids)
    return [lateness_row("lateness_staggered", f"Revocation lateness (direct grant mode): "
                         f"{sizes.stagger_grants} grants of "
                         f"{sizes.stagger_grant_s} s staggered over {sizes.stagger_grants * sizes.stagger_every_s:g} s",
                         late, missing,
                         "real grants (submit in the bench, approve, real workers activate in direct mode); "
                         "rq-scheduler fires the revoke; Graph emulator DELETE arrival − grant end",
                         {"product_reported_p50_s": percentile(reported, 50) if reported else None,
                          "product_reported_p99_s": percentile(reported, 99) if reported else None})]


def real_template(requests: Requests, services: Any, user: int, seconds: int = 3600) -> Any:
    """One grant through the real path (submit, approve, worker activation, receipts): the template that synthetic
    grants are cloned from, audit trail included."""
    record = requests.submit(user, seconds)
    requests.approve(record.id)
    wait_active(services, [record.id], 60)
    wait_idle(services.runtime.redis, timeout=120, settle=0.3)
    return services.runtime.store.require(record.id)


def memory_breakdown(client: redis.Redis, sample_every: int = 1) -> dict[str, Any]:
    """Bytes by key family (MEMORY USAGE of every key, pipelined), e.g. bg:req, bg:audit, rq:job."""
    families: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    batch: list[bytes] = []

    def family(key: bytes) -> str:
        text = key.decode(errors="replace")
        parts = text.split(":")
        if parts[0] == "rq" and len(parts) > 1:
            return ":".join(parts[:2])
        return ":".join(parts[:2]) if len(parts) > 1 else parts[0]

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, pipe.execute(), strict=True):
            families[family(key)] += int(size or 0)
            counts[family(key)] += 1
        batch.clear()

    for i, key in enumerate(client.scan_iter(count=1000)):
        if i % sample_every:
            continue
        batch.append(key)
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()
    return {name: {"keys": counts[name] * sample_every, "mb": round(mb(size * sample_every), 2)}
            for name, size in families.most_common()}


def measure_scale(ctx: Ctx) -> list[Row]:
    """Lateness of sampled real grants while 10,000 grants are active; Redis used memory at that moment."""
    sizes = ctx.sizes
    product = ctx.stack.fresh(ProductConfig(env=DIRECT))
    services = bench_services(product)
    requests = Requests(services)
    client = ctx.stack.redis.client()
    sampled_users = ctx.users(sizes.scale_sampled + 1)
    template = real_template(requests, services, sampled_users.pop())
    wait_idle(client, settle=0.5)
    baseline = ctx.stack.redis.used_memory()
    background = sizes.scale_active - sizes.scale_sampled - 1
    now = services.runtime.clock.now()
    ends = ends_spread(now + timedelta(hours=1), background, timedelta(hours=7))
    began = time.monotonic()
    created = sum(1 for _ in synthetic_grants(services, template, synthetic_users(background), ends,
                                              mode=GrantMode.DIRECT))
    ctx.log(f"  {created} synthetic active grants (store path, with their audit events) in "
            f"{time.monotonic() - began:.0f}s")
    window = sizes.scale_sampled * sizes.scale_sample_every_s
    duration = int(window + sizes.scale_hold_s)  # all sampled grants active together for a while: 10,000 at once
    pending = [requests.submit(n, duration) for n in sampled_users]
    wait_idle(client, settle=0.5)
    start = time.monotonic()
    for i, record in enumerate(pending):
        delay = start + i * sizes.scale_sample_every_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        requests.approve(record.id)
    ids = [r.id for r in pending]
    wait_active(services, ids, window + 60)
    active = services.runtime.store.count_active_grants()
    used = ctx.stack.redis.used_memory()
    info = client.info("memory")
    breakdown = memory_breakdown(client)
    ctx.log(f"  {active} active grants; Redis used_memory {mb(used):.1f} MB (baseline {mb(baseline):.1f} MB)")
    wait_ended(services, ids, duration + 120)
    wait_idle(client, timeout=300)
    late, missing, reported = lateness_of(ctx, services, ids)
    rows = [lateness_row("lateness_10k", f"Revocation lateness (direct grant mode) with {active:,} active grants "
                         f"({len(ids)} sampled)", late, missing,
                         f"{created:,} synthetic active grants (store path) + {len(ids)} real grants of {duration} s "
                         "approved over "
                         f"{window:g} s; Graph emulator DELETE arrival − grant end of the real ones",
                         {"active_grants": active,
                          "product_reported_p99_s": percentile(reported, 99) if reported else None})]
    rows.append(Row("redis_memory_10k", f"Redis used memory with {active:,} active grants", "MB", [mb(used)],
                    "≤ 50 MB", mb(used) <= 50, sample="one reading", how=(
                        "INFO used_memory of the bench's own redis-server at the moment all sampled grants are "
                        "active; synthetic grants carry what a real one leaves (record, indexes, ledger, scheduled "
                        "revoke, audit events)"),
                    detail={"active_grants": active, "baseline_mb": mb(baseline),
                            "per_grant_kb": (used - baseline) / max(1, active) / 1024,
                            "used_memory_dataset_mb": mb(int(info.get("used_memory_dataset", 0))),
                            "by_key_family": breakdown}))
    return rows


def measure_burst(ctx: Ctx) -> list[Row]:
    sizes = ctx.sizes
    rate = 20.0
    count = sizes.burst_grants
    budget = count / rate + 5
    completions: list[float] = []
    per_rep: list[dict[str, Any]] = []
    throttled_total = 0
    all_removed = True
    for rep in range(sizes.burst_reps):
        product = ctx.stack.fresh(ProductConfig(env={**DIRECT, "BREAKGLASS_GRAPH_WRITE_RATE": f"{rate:g}"}))
        services = bench_services(product)
        requests = Requests(services)
        client = ctx.stack.redis.client()
        template = real_template(requests, services, ctx.users(1)[0])
        wait_idle(client, settle=0.5)
        clock = services.runtime.clock
        lead = 5 + count * 0.03
        due_real = math.ceil(time.time() + lead) + 0.25
        from datetime import UTC, datetime

        end = clock.from_real(datetime.fromtimestamp(due_real, UTC))
        grants = list(synthetic_grants(services, template, synthetic_users(count), [end] * count,
                                       mode=GrantMode.DIRECT))
        ctx.stack.emulators.set_state("graph", {"assignments": graph_assignments(grants, kind="direct")})
        ctx.stack.emulators.set_state("graph", {"write_rate_limit": rate, "write_burst": rate})
        ctx.stack.emulators.clear_calls("graph")
        left = due_real - time.time()
        if left < 1:
            raise RuntimeError(f"set-up of {count} grants took longer than the lead time ({lead:.0f}s)")
        ctx.log(f"  rep {rep + 1}: {count} grants end at the same instant, in {left:.1f}s; Graph allows {rate:g} "
                "writes/s")
        ids = [g.request_id for g in grants]
        wait_ended(services, ids, left + budget + 60)
        calls = ctx.stack.emulators.calls("graph")
        throttled = sum(1 for c in calls if c.get("status") == 429)
        removals = removal_times(ctx)
        times = [removals[g.assignment_id][0] - due_real for g in grants if g.assignment_id in removals]
        missing = [g.request_id for g in grants if g.assignment_id not in removals]
        completion = max(times) if times and not missing else math.inf
        states = Counter(r.state.value for r in services.runtime.store.get_many(ids))
        completions.append(completion)
        throttled_total += throttled
        all_removed &= not missing
        per_rep.append({"completion_s": completion, "throttled_429": throttled, "never_removed": len(missing),
                        "first_removal_s": min(times) if times else None,
                        "removal_p50_s": percentile(times, 50) if times else None, "states": dict(states),
                        "writes": sum(1 for c in calls if c["method"] != "GET")})
        ctx.log(f"  rep {rep + 1}: last removal {completion:.1f}s after the expiry (budget {budget:g}s), "
                f"{throttled} × 429")
    passed = all_removed and throttled_total == 0 and max(completions) <= budget
    return [Row("burst_expiry", f"{count:,} grants expiring in the same second (direct grant mode), "
                                 f"Graph enforcing {rate:g} writes/s",
                "s", completions, f"all removed within {budget:g} s (= {count:,}/{rate:g} + 5), zero 429s", passed,
                sample="per repetition: last removal − expiry",
                how=f"synthetic active grants (store path) with one common end and real scheduled revokes; the "
                    f"emulator's token bucket at {rate:g}/s; product limiter BREAKGLASS_GRAPH_WRITE_RATE={rate:g} "
                    "(the emulated tenant's limit; the default is 15/s)",
                detail={"throttled_429_total": throttled_total, "per_rep": per_rep})]
