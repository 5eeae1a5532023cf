"""Redis outages as one process sees them: down, or answering but refusing writes (full, read-only, MISCONF,
loading). One watch per process (bot, worker, scheduler) backs off, logs at ERROR once per outage and counts what
Redis refused in a per-process Prometheus counter. Nothing about the outage can be written to Redis while it lasts,
so when writes work again the watch records it there (DomainMetrics, rendered by /metrics) and raises the Teams
alert, once per outage whichever process gets there first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from services.metrics import METRICS, DomainMetrics
from services.state.redis_conn import outage_kind, refuses_writes

log = logging.getLogger(__name__)
# Processes see the same outage end within a few back-off steps of each other: the first to see it alerts, and the
# others find the marker.
ALERT_WINDOW_S = 300

Alert = Callable[[str, list[tuple[str, str]]], object]


@dataclass
class Outage:
    kind: str
    since: datetime
    started: float  # monotonic
    detail: str


class OutageWatch:
    def __init__(self, process: str, client: redis.Redis, prefix: str, alert: Alert | None = None,
                 *, first_delay_s: float = 0.5, max_delay_s: float = 5.0):
        self.process = process
        self.redis = client
        self.prefix = prefix
        self.alert = alert
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.current: Outage | None = None
        self._lock = threading.Lock()
        self._probe = f"{prefix}:probe:{process}:{os.getpid()}"

    def failed(self, exc: BaseException) -> str | None:
        """Note an error: its outage kind (logged once per outage, counted every time), or None if it is none."""
        kind = outage_kind(exc)
        if kind is None:
            return None
        METRICS.redis_refused.labels(kind=kind).inc()
        self._begin(kind, str(exc))
        return kind

    def _begin(self, kind: str, detail: str) -> None:
        with self._lock:
            if self.current is not None:
                return
            self.current = Outage(kind, datetime.now(UTC), time.monotonic(), detail[:200])
        log.error("Redis outage (%s): backing off until it takes writes again", kind,
                  extra={"role": self.process, "kind": kind, "error": detail[:200]})

    def writable(self) -> bool:
        """One write probe; an outage it finds is noted as by `failed`."""
        try:
            kind = refuses_writes(self.redis, self._probe)
        except redis.exceptions.RedisError as exc:  # no outage: something else is wrong; say so, then go on
            log.exception("Redis write probe failed")
            kind = outage_kind(exc)
        if kind is None:
            return True
        METRICS.redis_refused.labels(kind=kind).inc()
        self._begin(kind, f"write probe refused ({kind})")
        return False

    def wait_until_writable(self, stopping: Callable[[], bool] = lambda: False,
                            sleep: Callable[[float], object] = time.sleep) -> bool:
        """Back off (0.5 s doubling to 5 s) until Redis takes a write; False if `stopping` said so first."""
        delay = self.first_delay_s
        while not self.writable():
            if stopping():
                return False
            sleep(delay)
            if stopping():
                return False
            delay = min(self.max_delay_s, delay * 2)
        self.ended()
        return True

    def ended(self) -> Outage | None:
        """Writes work again: count the outage in Redis and alert once (across processes). Errors here are
        logged, never raised: the caller is back at work."""
        with self._lock:
            outage, self.current = self.current, None
        if outage is None:
            return None
        took = time.monotonic() - outage.started
        log.warning("Redis takes writes again after %.1f s (%s)", took, outage.kind,
                    extra={"role": self.process, "kind": outage.kind, "seconds": round(took, 1)})
        try:
            DomainMetrics(self.redis, self.prefix).inc("redis_outages", f"{self.process}:{outage.kind}")
            first = self.redis.set(f"{self.prefix}:alerted:redis-outage", self.process, nx=True, ex=ALERT_WINDOW_S)
            if first and self.alert is not None:
                self.alert("Redis refused writes; breakglass resumed by itself", [
                    ("Outage", _DESCRIPTIONS.get(outage.kind, outage.kind)), ("Seen by", self.process),
                    ("From", f"{outage.since:%Y-%m-%d %H:%M:%S} UTC"), ("Lasted", f"{took:.0f} s (as seen here)"),
                    ("Check", "the reconciler re-drives anything that stalled; see /metrics and the logs")])
        except Exception:  # never let the report of an outage take the process down
            log.exception("could not record the end of a Redis outage")
        return outage


_DESCRIPTIONS = {
    "down": "Redis unreachable",
    "oom": "Redis full (maxmemory reached, noeviction)",
    "readonly": "Redis read-only (a replica, e.g. after a failover)",
    "misconf": "Redis refused writes after a failed snapshot (MISCONF)",
    "loading": "Redis loading its data",
    "masterdown": "Redis replica without its primary",
}
