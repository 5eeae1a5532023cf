"""Tick cost of rq-scheduler and the reconciler at 1k, 10k and 100k active grants.

Measured in the bench process, calling the same code the processes run each tick, against the same Redis:
`Reconciler.tick()` (built by the product's `Services`) and `AlignedScheduler.tick()` (heartbeat, lock,
`enqueue_jobs`, heartbeat, unlock: one pass of its loop) on a scheduler built as `breakglass scheduler` builds it.
The product's scheduler and workers are stopped meanwhile, so nothing else touches Redis.

Every scale sees the same due work: the reconciler runs on a frozen clock, and ten grants end inside its look-ahead
window (two reconcile intervals) at every scale; all other grants end 1-8 hours later. So the ratio shows how the
tick grows with the number of grants, not with the amount of work that happens to be due.

Each scale has its own population in its own database, all present at once, and the ticks are taken in turns
(1k, 10k, 100k, then 10k, 100k, 1k, ...): the machine's slow stretches then fall on every scale alike.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bench.core import Ctx, Row, ms, wait_idle
from bench.env import ProductConfig
from bench.m_expiry import real_template
from bench.population import Requests, bench_services, ends_spread, synthetic_grants, synthetic_users
from bench.stats import percentile
from policies.model import GrantMode
from services.clock import FixedClock
from services.composition import Runtime, Services
from services.state.queue import AlignedScheduler, JSONJob, JSONQueue

UPCOMING = 10


def measure_ticks(ctx: Ctx) -> list[Row]:
    sizes = ctx.sizes
    product = ctx.stack.fresh(ProductConfig(bot=False, workers=1, scheduler=False))
    services = bench_services(product)
    requests = Requests(services)
    client = ctx.stack.redis.client()
    template = real_template(requests, services, ctx.users(1)[0])
    wait_idle(client, settle=0.2)
    product.stop_one("worker1")
    client.config_set("appendonly", "no")  # up to 100k grants: no need to write ~1 GB of AOF for a tick timing
    frozen = FixedClock(services.runtime.clock.now())
    now = frozen.now()
    users = iter(synthetic_users(sum(sizes.tick_scales)))
    # One population per scale, each in a database of its own, all present at once: the ticks of every scale are
    # then taken in turns, so a slow stretch of the machine (seen: plateaus of a few seconds at ~3.3 and ~5.5 ms)
    # falls on every scale alike instead of on whichever scale was being measured then.
    tickers: dict[int, tuple[Any, AlignedScheduler]] = {}
    for db, scale in enumerate(sizes.tick_scales, start=1):
        conn = ctx.stack.redis.client(db)
        conn.flushdb()
        ticking = Services(Runtime(services.settings, clock=frozen, client=conn))
        scheduler = AlignedScheduler(queue=JSONQueue(connection=conn), connection=conn,
                                     interval=services.settings.scheduler_interval_s, job_class=JSONJob,
                                     queue_class=JSONQueue)
        began = time.monotonic()
        # Ten grants inside the look-ahead window at every scale; their scheduled revokes exist (as in
        # production) but are kept a day away in real time so rq-scheduler never fires them during the measurement.
        upcoming_ends = [now + timedelta(seconds=40 + i) for i in range(UPCOMING)]
        list(synthetic_grants(ticking, template, [next(users) for _ in range(UPCOMING)], upcoming_ends,
                              mode=GrantMode.DIRECT, audit=False, real_time=lambda _: time.time() + 86400))
        add = scale - UPCOMING
        ends = ends_spread(now + timedelta(hours=1), add, timedelta(hours=7))
        total = UPCOMING + sum(1 for _ in synthetic_grants(ticking, template, [next(users) for _ in range(add)],
                                                           ends, mode=GrantMode.DIRECT, audit=False, batch=2000))
        ctx.log(f"  db {db}: {total:,} active grants (written in {time.monotonic() - began:.0f}s); "
                f"{conn.zcard(scheduler.scheduled_jobs_key):,} scheduled jobs")
        tickers[scale] = (ticking.reconciler, scheduler)
    results: dict[int, dict[str, list[float]]] = {scale: {"scheduler": [], "reconciler": []}
                                                   for scale in sizes.tick_scales}
    for reconciler, scheduler in tickers.values():
        for _ in range(3):  # warm-up
            reconciler.tick()
            scheduler.tick()
    order = list(sizes.tick_scales)
    for _ in range(sizes.ticks):
        for scale in order:
            reconciler, scheduler = tickers[scale]
            t0 = time.perf_counter()
            report = reconciler.tick()
            results[scale]["reconciler"].append(ms(time.perf_counter() - t0))
            if not report.empty():
                raise RuntimeError(f"the reconciler acted during the tick measurement: {vars(report)}")
            t0 = time.perf_counter()
            scheduler.tick()
            results[scale]["scheduler"].append(ms(time.perf_counter() - t0))
            time.sleep(0.02)
        order = order[1:] + order[:1]  # no scale always goes first after the pause
    for scale in sizes.tick_scales:
        ctx.log(f"  @{scale:,}: scheduler tick p50 {percentile(results[scale]['scheduler'], 50):.2f} ms, "
                f"reconciler tick p50 {percentile(results[scale]['reconciler'], 50):.2f} ms")
    for db in range(1, len(sizes.tick_scales) + 1):
        ctx.stack.redis.client(db).flushdb()
    client.config_set("appendonly", "yes")
    rows: list[Row] = []
    small, large = min(results), max(results)
    for name, label in (("scheduler", "rq-scheduler tick"), ("reconciler", "Reconciler tick")):
        for scale in sizes.tick_scales:
            rows.append(Row(f"tick_{name}_{scale}", f"{label} at {scale:,} grants", "ms", results[scale][name], "—",
                            None, how="time per tick, in-process against the same Redis, the scales in turns"))
        ratio = percentile(results[large][name], 50) / percentile(results[small][name], 50)
        ratio99 = percentile(results[large][name], 99) / percentile(results[small][name], 99)
        rows.append(Row(f"tick_{name}_ratio", f"{label}: {large:,} / {small:,} grants", "×", [ratio], "≤ 1.5",
                        ratio <= 1.5,
                        sample="ratio of medians", detail={"p99_ratio": ratio99}))
    return rows
