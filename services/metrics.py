"""Prometheus metrics.

Domain metrics (requests by outcome, approvals, grant latency, revocation lateness, job failures, child incidents)
are produced by the bot and by workers in different processes, so they are kept in Redis and rendered by whichever
bot replica is scraped; gauges (active grants, pending approvals) are read from the store at scrape time.
HTTP-level counters are per process, as they should be.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from policies.lifecycle import State

if TYPE_CHECKING:
    from services.state.store import RequestStore

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
LATENESS_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

COUNTERS = {
    "requests": ("breakglass_requests_total", "Requests by decision outcome", "outcome"),
    "approvals": ("breakglass_approvals_total", "Approval votes by verdict", "verdict"),
    "grants": ("breakglass_grants_total", "Grant activations by result", "result"),
    "revocations": ("breakglass_revocations_total", "Revocations by reason", "reason"),
    "job_failures": ("breakglass_job_failures_total", "Job failures by job", "job"),
    "job_retries": ("breakglass_job_retries_total", "Job retries scheduled by job", "job"),
    "redriven": ("breakglass_jobs_redriven_total", "Working steps the reconciler re-drove after their deadline",
                 "step"),
    "child_incidents": ("breakglass_child_incidents_total", "Integration-failure child incidents opened", "system"),
    "redis_outages": ("breakglass_redis_outages_total", "Redis outages (down or refusing writes) a process came "
                      "through, counted when they ended", "process_kind"),
}
HISTOGRAMS = {
    "grant_latency": ("breakglass_approve_to_grant_seconds", "From approval to verified Graph assignment",
                      LATENCY_BUCKETS),
    "revocation_lateness": ("breakglass_revocation_lateness_seconds", "Graph removal time minus expiry",
                            LATENESS_BUCKETS),
}


class DomainMetrics:
    """Counters and histograms kept in Redis hashes so every process contributes to one view."""

    def __init__(self, client: redis.Redis, prefix: str = "bg"):
        self.redis = client
        self.key = f"{prefix}:metrics"

    def inc(self, name: str, label: str, amount: float = 1.0) -> None:
        self.redis.hincrbyfloat(f"{self.key}:c:{name}", label, amount)

    def observe(self, name: str, value: float) -> None:
        buckets = HISTOGRAMS[name][2]
        index = bisect.bisect_left(buckets, value)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrbyfloat(f"{self.key}:h:{name}", "sum", value)
        pipe.hincrby(f"{self.key}:h:{name}", "count", 1)
        pipe.hincrby(f"{self.key}:h:{name}", f"b{index}", 1)
        pipe.execute()

    def counters(self, name: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.redis.hgetall(f"{self.key}:c:{name}").items()}

    def histogram(self, name: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.redis.hgetall(f"{self.key}:h:{name}").items()}


class _StoreCollector(Collector):
    def __init__(self, store: RequestStore):
        self.store = store

    def collect(self) -> Iterator[Any]:
        store = self.store
        metrics = DomainMetrics(store.redis, store.keys.p)
        for name, (metric, doc, label) in COUNTERS.items():
            family = CounterMetricFamily(metric, doc, labels=[label])
            for value, count in sorted(metrics.counters(name).items()):
                family.add_metric([value], count)
            yield family
        for name, (metric, doc, buckets) in HISTOGRAMS.items():
            data = metrics.histogram(name)
            cumulative, out = 0.0, []
            for i, bound in enumerate(buckets):
                cumulative += data.get(f"b{i}", 0.0)
                out.append((str(bound), cumulative))
            cumulative += data.get(f"b{len(buckets)}", 0.0)
            out.append(("+Inf", cumulative))
            yield HistogramMetricFamily(metric, doc, buckets=out, sum_value=data.get("sum", 0.0))
        active = GaugeMetricFamily("breakglass_grants_active", "Grants currently holding access")
        active.add_metric([], store.count_active_grants())
        yield active
        pending = GaugeMetricFamily("breakglass_requests_pending_approval", "Requests waiting for approvers")
        pending.add_metric([], store.count_in_state(State.PENDING_APPROVAL))
        yield pending


class _HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_rejected = Counter("breakglass_http_rejected_total", "Requests rejected at the endpoint",
                                     ["reason"], registry=self.registry)
        self.activities = Counter("breakglass_activities_total", "Activities processed by type", ["type"],
                                  registry=self.registry)
        self.redis_refused = Counter("breakglass_redis_refused_total", "Redis operations this process saw fail "
                                     "with an outage (down, OOM, READONLY, MISCONF, LOADING)", ["kind"],
                                     registry=self.registry)


METRICS = _HttpMetrics()


def metrics_response(store: RequestStore) -> Any:
    from aiohttp import web

    registry = CollectorRegistry()
    registry.register(_StoreCollector(store))
    body = generate_latest(METRICS.registry)
    try:
        body += generate_latest(registry)
    except redis.exceptions.RedisError:  # Redis down: this process's own counters (its outage among them) still
        METRICS.redis_refused.labels(kind="down").inc()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
