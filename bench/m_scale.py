"""Tick cost of rq-scheduler and the reconciler at 1k, 10k and 100k active grants.

Measured in the bench process, calling the same code the processes run each tick, against the same Redis:
`Reconciler.tick()` (built by the product's `Services`) and `AlignedScheduler.tick()` (heartbeat, lock,
`enqueue_jobs`, heartbeat, unlock: one pass of its loop) on a scheduler built as `breakglass scheduler` builds it.
The product's scheduler and workers are stopped meanwhile, so nothing else touches Redis.

Every scale sees the same due work: the reconciler runs on a frozen clock, and ten grants end inside its look-ahead
window (two reconcile intervals) at every scale; all other grants end 1-8 hours later. So the ratio shows how the
tick grows with the number of grants, not with the amount of work that happens to be due.
"""

from __future__ import annotations

import time
from datetime import timedelta

from bench.core import Ctx, Row, ms, wait_idle
from bench.env import ProductConfig
from bench.m_expiry import real_template
from bench.population import Requests, bench_services, ends_spread, synthetic_grants, synthetic_users
from bench.stats import percentile
from policies.model import GrantMode
from services.clock import FixedClock
from services.queue import AlignedScheduler, JSONJob, JSONQueue
from services.runtime import Runtime
from services.wiring import Services

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
    ticking = Services(Runtime(services.settings, clock=frozen, client=client))
    reconciler = ticking.reconciler
    scheduler = AlignedScheduler(queue=JSONQueue(connection=client), connection=client,
                                 interval=services.settings.scheduler_interval_s, job_class=JSONJob,
                                 queue_class=JSONQueue)
    now = frozen.now()
    users = iter(synthetic_users(max(sizes.tick_scales) + UPCOMING))
    # Ten grants inside the look-ahead window at every scale; their scheduled revokes exist (as in production)
    # but are kept a day away in real time so rq-scheduler never fires them during the measurement.
    upcoming_ends = [now + timedelta(seconds=40 + i) for i in range(UPCOMING)]
    list(synthetic_grants(ticking, template, [next(users) for _ in range(UPCOMING)], upcoming_ends,
                          mode=GrantMode.DIRECT, audit=False, real_time=lambda _: time.time() + 86400))
    total = 1 + UPCOMING
    results: dict[int, dict[str, list[float]]] = {}
    for scale in sizes.tick_scales:
        add = scale - total
        began = time.monotonic()
        ends = ends_spread(now + timedelta(hours=1), add, timedelta(hours=7))
        total += sum(1 for _ in synthetic_grants(ticking, template, [next(users) for _ in range(add)], ends,
                                                 mode=GrantMode.DIRECT, audit=False, batch=2000))
        ctx.log(f"  {total:,} active grants ({add:,} added in {time.monotonic() - began:.0f}s); "
                f"{client.zcard(scheduler.scheduled_jobs_key):,} scheduled jobs")
        sched: list[float] = []
        recon: list[float] = []
        for _ in range(3):  # warm-up
            reconciler.tick()
            scheduler.tick()
        for _ in range(sizes.ticks):
            t0 = time.perf_counter()
            report = reconciler.tick()
            recon.append(ms(time.perf_counter() - t0))
            if not report.empty():
                raise RuntimeError(f"the reconciler acted during the tick measurement: {vars(report)}")
            t0 = time.perf_counter()
            scheduler.tick()
            sched.append(ms(time.perf_counter() - t0))
            time.sleep(0.02)
        results[scale] = {"scheduler": sched, "reconciler": recon}
        ctx.log(f"  @{scale:,}: scheduler tick p50 {percentile(sched, 50):.2f} ms, reconciler tick p50 "
                f"{percentile(recon, 50):.2f} ms")
    client.config_set("appendonly", "yes")
    rows: list[Row] = []
    small, large = min(results), max(results)
    for name, label in (("scheduler", "rq-scheduler tick"), ("reconciler", "Reconciler tick")):
        for scale in sizes.tick_scales:
            rows.append(Row(f"tick_{name}_{scale}", f"{label} at {scale:,} grants", "ms", results[scale][name], "—",
                            None, how="time per tick, in-process against the same Redis"))
        ratio = percentile(results[large][name], 50) / percentile(results[small][name], 50)
        ratio99 = percentile(results[large][name], 99) / percentile(results[small][name], 99)
        rows.append(Row(f"tick_{name}_ratio", f"{label}: {large:,} / {small:,} grants", "×", [ratio], "≤ 1.5",
                        ratio <= 1.5,
                        sample="ratio of medians", detail={"p99_ratio": ratio99}))
    return rows
