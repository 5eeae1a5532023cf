"""`breakglass worker` and `breakglass scheduler`: the RQ worker (JSON jobs only) and rq-scheduler (1 s)."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from cards.builder import prepare as prepare_cards
from jobs.context import install
from services import queue as q
from services.logs import configure_logging
from services.redis_conn import require_safe_redis
from services.runtime import Runtime
from services.settings import get_settings
from services.wiring import Services

log = logging.getLogger(__name__)
FOREIGN_SCAN_EVERY_S = 300
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
MAX_RESTARTS_PER_HOUR = 60


def _runtime(*, graph: bool) -> Runtime:
    settings = get_settings()
    settings.require(graph=graph)
    configure_logging(settings)
    runtime = Runtime(settings)
    require_safe_redis(runtime.redis)
    return runtime


class ReconcileWatchdog(threading.Thread):
    """The reconciler normally runs from rq-scheduler; if the scheduler is down, a worker notices the silence and
    enqueues it, so expiry does not depend on the scheduler being alive. It looks four times per period and steps
    in once a run is a quarter period late, so without a scheduler the reconciler still runs every ~1.5 periods."""

    def __init__(self, services: Services, interval_s: int):
        super().__init__(name="reconcile-watchdog", daemon=True)
        self.services = services
        self.interval_s = interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s / 4):
            try:
                last = self.services.reconciler.last_run()
                now = self.services.runtime.clock.now()
                stale = last is None or now - last > timedelta(seconds=1.25 * self.interval_s)
                if stale:
                    self.services.queue.enqueue(q.RECONCILE, jid="reconcile-watchdog", at_front=True)
            except Exception:
                log.exception("reconcile watchdog check failed")


def run_worker(burst: bool = False, fork: bool = True, name: str | None = None) -> int:
    runtime = _runtime(graph=True)
    services = Services(runtime)
    # Build the clients (and the card models) now, before RQ forks work horses, so every job inherits them.
    for component in ("grants", "receipts", "notifier", "reconciler", "foreign_scan"):
        getattr(services, component)
    prepare_cards()
    install(services)
    worker_cls: Any = Worker if fork else SimpleWorker
    worker = worker_cls([q.JSONQueue(connection=runtime.redis)], connection=runtime.redis,
                        serializer=JSONSerializer, job_class=q.JSONJob, queue_class=q.JSONQueue,
                        name=name or f"breakglass-{socket.gethostname()}-{os.getpid()}",
                        job_monitoring_interval=q.heartbeat_interval_s(runtime.settings.reconcile_interval_s))
    watchdog = ReconcileWatchdog(services, runtime.settings.reconcile_interval_s)
    if not burst:
        watchdog.start()
    log.info("worker starting", extra={"queue": q.QUEUE_NAME, "fork": fork, "grant_mode": runtime.settings.grant_mode})

    def work(generation: int) -> bool:
        nonlocal worker
        if generation > 1:  # the old registration may still look alive; the new loop takes a fresh name
            worker = worker_cls([q.JSONQueue(connection=runtime.redis)], connection=runtime.redis,
                                serializer=JSONSerializer, job_class=q.JSONJob, queue_class=q.JSONQueue,
                                name=f"{worker.name.split('~')[0]}~{generation}",
                                job_monitoring_interval=worker.job_monitoring_interval)
        worker.work(burst=burst, logging_level=runtime.settings.log_level, with_scheduler=False)
        # A SIGTERM while idle ends RQ's loop without setting _stop_requested (only the busy path sets it); both
        # record the shutdown request date. Anything else: RQ gave up on an error (Redis gone mid-job).
        return burst or worker._stop_requested or worker._shutdown_requested_date is not None

    try:
        return survive_redis_outages(work, runtime.redis, "worker")
    finally:
        watchdog.stop_event.set()


def survive_redis_outages(run: Callable[[int], bool], client: redis.Redis, what: str) -> int:
    """Keep a worker or scheduler alive through a Redis restart or failover. RQ's worker quits on most Redis
    errors and rq-scheduler on all of them, which would leave nobody to run scheduled revocations: when a loop ends
    without being asked to (`run` returns False or raises a connection error), wait until Redis answers again and
    start a fresh loop. A loop that keeps failing is restarted at most MAX_RESTARTS_PER_HOUR times, then the
    process exits non-zero for its supervisor."""
    restarts: list[float] = []
    for generation in itertools.count(1):
        try:
            if run(generation):
                return 0
            log.error("%s loop ended unexpectedly; restarting it", what)
        except REDIS_DOWN as exc:
            log.error("%s lost Redis; waiting for it to come back", what, extra={"error": str(exc)[:200]})
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 3600] + [now]
        if len(restarts) > MAX_RESTARTS_PER_HOUR:
            log.error("%s restarted too often; exiting", what)
            return 1
        wait_for_redis(client)
    return 1  # unreachable: itertools.count never ends


def wait_for_redis(client: redis.Redis, *, first_delay_s: float = 0.5, max_delay_s: float = 5.0) -> None:
    delay = first_delay_s
    while True:
        try:
            client.ping()
            return
        except REDIS_DOWN:
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)


def ensure_periodic(scheduler: Scheduler, reconcile_every_s: int) -> None:
    """Register the periodic jobs once (fixed ids), whoever starts first."""
    periodic = [("periodic-reconcile", q.RECONCILE, reconcile_every_s),
                ("periodic-foreign-scan", q.SCAN_FOREIGN, FOREIGN_SCAN_EVERY_S)]
    for jid, func, every in periodic:
        if jid in scheduler:
            continue
        scheduler.schedule(datetime.now(UTC).replace(tzinfo=None), func, interval=every, repeat=None, id=jid,
                           timeout=300, result_ttl=600)


def run_scheduler(burst: bool = False) -> int:
    runtime = _runtime(graph=False)
    settings = runtime.settings
    log.info("scheduler starting", extra={"interval_s": settings.scheduler_interval_s})

    def run(generation: int) -> bool:
        # A fresh instance (and name) per loop: the previous one may still look registered after losing Redis.
        scheduler = q.AlignedScheduler(queue=q.JSONQueue(connection=runtime.redis), connection=runtime.redis,
                                       interval=settings.scheduler_interval_s, job_class=q.JSONJob,
                                       queue_class=q.JSONQueue)
        ensure_periodic(scheduler, settings.reconcile_interval_s)
        scheduler.run(burst=burst)  # returns only in burst mode; SIGTERM raises SystemExit
        return True

    return survive_redis_outages(run, runtime.redis, "scheduler")
