"""The bot endpoint under load (valid signed activities; an invalid-token flood), process memory, and Graph token
requests across two workers."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from bench import loadgen
from bench.core import BotClient, Ctx, Row, approve_activity, mb, queue_idle, refresh_activity, wait_idle
from bench.env import ProductConfig, Sampler, wait_until
from bench.m_latency import wait_active
from bench.population import Requests, bench_services
from bench.stats import percentile
from services.emulators.botauth import TokenVariant

INVALID = [v.value for v in TokenVariant if v is not TokenVariant.VALID]
CONCURRENCY = 16


def _valid_requests(product: Any, token: str, request_ids: list[str], count: int) -> list[bytes]:
    url = product.bot_url + "/api/messages"
    rng = random.Random(7)
    return [loadgen.build_request(url, json.dumps(refresh_activity(rng.choice(request_ids), product.service_url))
                                  .encode(), {"Authorization": f"Bearer {token}"}) for _ in range(count)]


def measure_endpoint(ctx: Ctx) -> list[Row]:
    """Valid: `request.refresh` invokes (what Teams sends for every card view with Universal Actions refresh),
    signed with a channel token from the BotAuth emulator and validated by the bot (real JWT auth); the bot
    reads the request and renders its card. Invalid: the same activity with a bad token (every variant)."""
    sizes = ctx.sizes
    product = ctx.stack.fresh(ProductConfig())
    services = bench_services(product)
    requests = Requests(services)
    client = ctx.stack.redis.client()
    ids = [requests.submit(n, 3600).id for n in ctx.users(50)]
    wait_idle(client, settle=0.5)
    token = ctx.stack.emulators.mint(product.service_url)
    bad_tokens = [ctx.stack.emulators.mint(product.service_url, v) for v in INVALID]
    url = product.bot_url + "/api/messages"
    pool = _valid_requests(product, token, ids, 4000)
    bad_pool = [loadgen.build_request(url, json.dumps(refresh_activity(ids[i % len(ids)], product.service_url))
                                      .encode(), {"Authorization": f"Bearer {bad_tokens[i % len(bad_tokens)]}"})
                for i in range(len(bad_tokens) * 50)]
    served = {"valid": 0, "invalid": 0}

    def check_valid(status: int, body: bytes) -> None:
        if status != 200:
            raise RuntimeError(f"valid activity answered {status}: {body[:200]!r}")

    warm = loadgen.closed_loop(url, lambda i: pool[i % len(pool)], concurrency=CONCURRENCY, duration_s=2,
                               check=check_valid)
    served["valid"] += warm.completed
    capacity: list[float] = []
    cap_lat: list[float] = []
    latency: list[float] = []
    achieved: list[float] = []
    invalid_rates: list[float] = []
    non_401 = 0
    per_rep: list[dict[str, Any]] = []
    for rep in range(sizes.endpoint_reps):
        cap = loadgen.closed_loop(url, lambda i: pool[i % len(pool)], concurrency=CONCURRENCY,
                                  duration_s=sizes.endpoint_seconds, check=check_valid)
        served["valid"] += cap.completed
        capacity.append(cap.throughput)
        cap_lat += cap.latencies_ms
        count = int(sizes.endpoint_rate * sizes.endpoint_seconds)
        fixed = loadgen.open_loop(url, _valid_requests(product, token, ids, count), sizes.endpoint_rate,
                                  max_connections=128)
        served["valid"] += fixed.completed
        latency += fixed.latencies_ms
        achieved.append(fixed.throughput)
        flood = loadgen.closed_loop(url, lambda i: bad_pool[i % len(bad_pool)], concurrency=CONCURRENCY,
                                    duration_s=sizes.endpoint_seconds)
        served["invalid"] += flood.completed
        invalid_rates.append(flood.throughput)
        non_401 += sum(v for k, v in flood.statuses.items() if k != 401) + sum(flood.errors.values())
        per_rep.append({
            "valid_capacity_per_s": cap.throughput, "valid_capacity_p99_ms": percentile(cap.latencies_ms, 99),
            "generator_cpu_share_capacity": cap.generator_cpu_share,
            f"at_{sizes.endpoint_rate:g}_p50_ms": percentile(fixed.latencies_ms, 50),
            f"at_{sizes.endpoint_rate:g}_p99_ms": percentile(fixed.latencies_ms, 99),
            f"at_{sizes.endpoint_rate:g}_achieved_per_s": fixed.throughput,
            f"at_{sizes.endpoint_rate:g}_statuses": dict(fixed.statuses),
            "generator_cpu_share_fixed": fixed.generator_cpu_share,
            "invalid_per_s": flood.throughput, "invalid_statuses": dict(flood.statuses),
            "invalid_errors": dict(flood.errors), "generator_cpu_share_invalid": flood.generator_cpu_share})
        ctx.log(f"  rep {rep + 1}: valid capacity {cap.throughput:.0f}/s; at {sizes.endpoint_rate:g}/s p99 "
                f"{percentile(fixed.latencies_ms, 99):.0f} ms ({fixed.throughput:.0f}/s achieved); invalid "
                f"{flood.throughput:.0f}/s {dict(flood.statuses)}; generator {100 * cap.generator_cpu_share:.0f}%/"
                f"{100 * fixed.generator_cpu_share:.0f}%/{100 * flood.generator_cpu_share:.0f}% of a core")
    rss = product.rss("bot")
    rate = sizes.endpoint_rate
    p99 = percentile(latency, 99)
    return [
        Row("endpoint_valid_capacity", "Bot endpoint: valid signed activities/s (capacity)", "/s", capacity,
            f"≥ {rate:g}/s", min(capacity) >= rate, sample="per repetition",
            how=f"closed loop, {CONCURRENCY} keep-alive connections, {sizes.endpoint_seconds:g} s per repetition; "
                "request.refresh invokes with a valid channel token (real JWT validation)",
            detail={"latency_p50_ms": percentile(cap_lat, 50), "latency_p99_ms": percentile(cap_lat, 99),
                    "per_rep": per_rep}),
        Row("endpoint_valid_latency", f"Bot endpoint: latency at {rate:g} valid activities/s", "ms", latency,
            "p99 ≤ 250 ms", p99 <= 250 and min(achieved) >= 0.98 * rate,
            how=f"open loop at {rate:g}/s for {sizes.endpoint_seconds:g} s per repetition, latency from the "
                "scheduled send time",
            detail={"achieved_per_s": achieved}),
        Row("endpoint_invalid", "Bot endpoint: invalid-token flood (all 401)", "/s", invalid_rates,
            "≥ 1,000/s, all 401", min(invalid_rates) >= 1000 and non_401 == 0, sample="per repetition",
            how=f"closed loop, {CONCURRENCY} connections; tokens rotate through {', '.join(INVALID)}",
            detail={"non_401": non_401}),
        Row("endpoint_bot_rss", "Bot RSS after the endpoint runs", "MB", [mb(rss)], "—", None,
            sample="one reading", detail={"requests_served": served}),
    ]


def measure_memory(ctx: Ctx) -> list[Row]:
    """RSS of the bot and the workers after N requests to the bot (approve clicks and card refreshes) and every
    job those requests caused; peak RSS sampled every 0.5 s (a worker: its main process and its work horse)."""
    sizes = ctx.sizes
    product = ctx.stack.fresh(ProductConfig())
    services = bench_services(product)
    requests = Requests(services)
    client = ctx.stack.redis.client()
    pending = [requests.submit(n, 3600) for n in ctx.users(sizes.memory_approvals)]
    wait_idle(client, settle=0.5)
    token = ctx.stack.emulators.mint(product.service_url)
    warm = BotClient(product.bot_url, token)
    warm.post(refresh_activity(pending[0].id, product.service_url))
    warm.close()
    start_rss = {name: product.rss(name) for name in product.children}
    workers = product.names("worker")
    sampler = Sampler(product, ["bot", *workers])
    horse_peak: dict[str, int] = dict.fromkeys(workers, 0)
    sampler.start()
    url = product.bot_url + "/api/messages"
    header = {"Authorization": f"Bearer {token}"}
    every = max(1, sizes.memory_requests // max(1, len(pending)))
    raw: list[bytes] = []
    approvals = iter(pending)
    rng = random.Random(11)
    for i in range(sizes.memory_requests):
        record = next(approvals, None) if i % every == 0 else None
        activity = (approve_activity(services.runtime.store, record.id, product.service_url) if record is not None
                    else refresh_activity(rng.choice(pending).id, product.service_url))
        raw.append(loadgen.build_request(url, json.dumps(activity).encode(), header))
    result = loadgen.open_loop(url, raw, 150, max_connections=64, grace_s=900)
    ctx.log(f"  {result.completed} requests in {result.wall_s:.0f}s {dict(result.statuses)}; waiting for the jobs")

    def drained() -> bool:
        for name in workers:
            horse_peak[name] = max(horse_peak[name], product.rss(name, with_children=True) - product.rss(name))
        return queue_idle(client)

    wait_until(drained, 1200, "the workers to finish every job", interval=0.5)
    time.sleep(1)
    peak = sampler.stop()
    final = {name: product.rss(name) for name in product.children}
    bot = final["bot"]
    worker = max(final[n] for n in workers)
    detail = {"requests": result.completed, "statuses": dict(result.statuses), "approvals": len(pending),
              "start_mb": {k: mb(v) for k, v in start_rss.items()}, "final_mb": {k: mb(v) for k, v in final.items()},
              "peak_mb": {k: mb(v) for k, v in peak.items()},
              "work_horse_peak_mb": {k: mb(v) for k, v in horse_peak.items()}}
    return [
        Row("memory_bot", f"Bot RSS after {result.completed:,} requests", "MB", [mb(bot)], "≤ 150 MB",
            mb(bot) <= 150 and mb(peak["bot"]) <= 150, sample="final reading (peak in detail)", how=(
                "psutil RSS of `breakglass serve`; requests: approve clicks and card refreshes at 150/s"),
            detail=detail),
        Row("memory_worker", "Worker RSS after those requests' jobs", "MB", [mb(worker)], "≤ 120 MB",
            mb(worker) <= 120 and max(mb(peak[n]) for n in workers) <= 120,
            sample="final reading, larger worker (peaks in detail)",
            how="psutil RSS of each `breakglass worker` main process once every job is done", detail=detail),
    ]


def measure_tokens(ctx: Ctx) -> list[Row]:
    """Graph jobs (grant activations: one POST and one GET each) across two workers that start with an
    empty token cache; counted at the Entra emulator's token endpoint. Forking workers (`--fork`), the harder
    case: every job runs in a fresh work horse whose msal memory cache starts empty, so only the cache shared
    through Redis keeps the count down."""
    sizes = ctx.sizes
    counts: list[float] = []
    per_rep: list[dict[str, Any]] = []
    for _rep in range(sizes.token_reps):
        product = ctx.stack.fresh(ProductConfig(workers=0, bot=False, env={"BREAKGLASS_GRAPH_WRITE_RATE": "100"}))
        services = bench_services(product)
        requests = Requests(services)
        client = ctx.stack.redis.client()
        records = [requests.submit(n, 3600) for n in ctx.users(sizes.token_jobs)]
        for record in records:
            requests.approve(record.id)
        # The bench's own Graph reads put a token into the shared cache; the workers must start without it.
        for key in client.scan_iter(match="bg:msal:*"):
            client.delete(key)
        before = ctx.stack.emulators.state("entra")
        product.add_workers(2, ["--fork"])
        began = time.monotonic()
        wait_active(services, [r.id for r in records], 600)
        wait_idle(client, timeout=600)
        after = ctx.stack.emulators.state("entra")
        issued = after["issued"][len(before["issued"]):]
        graph = sum(1 for i in issued if i["client_id"] == "dddddddd-0000-0000-0000-000000000001")
        total = after["token_request_count"] - before["token_request_count"]
        posts = len([c for c in ctx.stack.emulators.calls("graph", "roleAssignmentScheduleRequests", "POST")])
        counts.append(float(total))
        per_rep.append({"token_requests": total, "graph_client_tokens": graph, "bot_client_tokens": len(issued) - graph,
                        "graph_assign_posts": posts, "seconds": time.monotonic() - began})
        ctx.log(f"  {len(records)} activations by 2 workers: {total} token requests ({graph} Graph, "
                f"{len(issued) - graph} Bot Framework)")
    return [Row("token_requests", f"Token requests for {sizes.token_jobs} Graph jobs (pim grant mode) across 2 workers",
                "count",
                counts, "≤ 10", max(counts) <= 10, sample="per repetition",
                how="grant activations by two forking workers (--fork) starting with an empty Redis token cache; Entra "
                    "emulator token endpoint count (Graph and Bot Framework clients)",
                detail={"per_rep": per_rep})]
