"""`breakglass worker` and `breakglass scheduler`: the RQ worker (JSON jobs only) and rq-scheduler (1 s)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now
from rq.worker import WorkerStatus
from rq_scheduler import Scheduler

from cards.builder import prepare as prepare_cards
from jobs.context import install
from services.composition import Runtime, Services
from services.heap import freeze_startup_objects
from services.logs import configure_logging
from services.settings import get_settings
from services.state import queue as q
from services.state.redis_conn import outage_kind, require_safe_redis
from services.workflow.outage import OutageWatch

log = logging.getLogger(__name__)
FOREIGN_SCAN_EVERY_S = 300
REVIEW_CHECK_EVERY_S = 3600  # the scheduled access review is due at most once per `reviews.every`
MAX_RESTARTS_PER_HOUR = 60


def outage_watch(services: Services, process: str) -> OutageWatch:
    """The process's watch on Redis; its alert goes through the notifier once Redis takes writes again."""
    runtime = services.runtime

    def alert(title: str, facts: list[tuple[str, str]]) -> object:
        return services.notifier.alert(title, facts, "critical")

    return OutageWatch(process, runtime.redis, runtime.settings.key_prefix, alert)


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

    def __init__(self, services: Services, interval_s: int, watch: OutageWatch | None = None, name: str = ""):
        super().__init__(name="reconcile-watchdog", daemon=True)
        self.services = services
        self.interval_s = interval_s
        self.watch = watch
        self.worker_name = name
        self.roll = q.WorkerRoll(services.runtime.redis, services.settings.key_prefix, interval_s)
        self.stop_event = threading.Event()

    def run(self) -> None:
        self._beat()
        while not self.stop_event.wait(self.interval_s / 4):
            self._beat()
            try:
                last = self.services.reconciler.last_run()
                now = self.services.runtime.clock.now()
                stale = last is None or now - last > timedelta(seconds=1.25 * self.interval_s)
                if stale:
                    self.services.queue.enqueue(q.RECONCILE, jid="reconcile-watchdog", at_front=True)
            except Exception as exc:
                if self.watch is None or self.watch.failed(exc) is None:  # an outage is logged once, by the watch
                    log.exception("reconcile watchdog check failed")

    def _beat(self) -> None:
        """This worker is alive (WorkerRoll): the scheduler alerts, and /readyz and doctor say so, when none is."""
        try:
            self.roll.beat(self.worker_name)
        except Exception as exc:
            if self.watch is None or self.watch.failed(exc) is None:
                log.exception("worker liveness beat failed")

    def leave(self) -> None:
        self.stop_event.set()
        try:
            self.roll.gone(self.worker_name)
        except Exception:  # noqa: BLE001 - leaving while Redis is down: the entry goes stale by itself
            log.warning("could not take the worker off the roll")


class _PipelinedHeartbeat:
    """RQ's heartbeat sends HSET and two EXPIREs as three round trips when it is not given a pipeline, and the
    worker calls it so between dequeueing a job and running it: send them as one.

    And RQ's command channel (`rq` CLI's shutdown, kill-horse, stop-job) polls with a 60 s sleep: on the way out,
    when the unsubscribe wins the race, redis-py's thread waits out that poll for a subscription before the join in
    RQ's teardown returns, so a SIGTERM took up to a minute to end the worker. Poll each second instead."""

    COMMAND_POLL_S = 1.0

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)  # type: ignore[attr-defined]
        self.pubsub = self.connection.pubsub()  # type: ignore[attr-defined]
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})  # type: ignore[attr-defined]
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=self.COMMAND_POLL_S, daemon=True,
            exception_handler=self._pubsub_exception_handler)  # type: ignore[attr-defined]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
            return
        with self.connection.pipeline() as pipe:  # type: ignore[attr-defined]
            super().heartbeat(timeout, pipeline=pipe)  # type: ignore[misc]
            pipe.execute()


class ForkingWorker(_PipelinedHeartbeat, Worker):
    """`breakglass worker --fork`: each job in a forked work horse."""


class InProcessWorker(_PipelinedHeartbeat, SimpleWorker):
    """Runs each job in the worker process: no fork and no fresh work horse per job, which is about half of the
    time from an approval click to the Graph request. A forking worker's main process refreshes the job's
    heartbeat while its horse works; here a thread does it, so a long job never looks abandoned to
    JobQueue.pending and the reconciler. Job timeouts still apply (SIGALRM, main thread). Less isolated than a
    work horse: a job that crashes the interpreter takes the worker down (its supervisor restarts it, and the
    job is retried as abandoned); `breakglass worker --fork` trades the speed for that isolation.

    Starting a job costs one Redis round trip instead of RQ's three: the heartbeat RQ sends right after a dequeue,
    `prepare_execution` and `prepare_job_execution` write the same records in one pipeline (RQ 3.0's own calls,
    in RQ's order), and one long-lived thread carries the heartbeats instead of a new thread per job."""

    _just_dequeued = False
    _prepared_job: str | None = None
    _beats: _JobHeartbeats | None = None

    def reorder_queues(self, reference_queue: Queue) -> None:
        super().reorder_queues(reference_queue)
        # RQ calls this only after a successful dequeue, immediately before its post-dequeue heartbeat; that
        # heartbeat goes out with the job's start below instead.
        self._just_dequeued = True

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is None and self._just_dequeued:
            self._just_dequeued = False
            return
        super().heartbeat(timeout, pipeline=pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._just_dequeued = False
        execution = self._start(job)
        beats = self._heartbeats()
        beats.watch(job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            beats.watch(None, None)
        self.set_state(WorkerStatus.IDLE)

    def _start(self, job: Job) -> Execution:
        """`prepare_execution` + `prepare_job_execution` (RQ 3.0) as one transaction."""
        with self.connection.pipeline() as pipe:
            ttl = self.get_heartbeat_ttl(job)
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(rq_now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            pipe.execute()
        self._prepared_job = job.id
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if self._prepared_job == job.id and not remove_from_intermediate_queue:
            self._prepared_job = None
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def _heartbeats(self) -> _JobHeartbeats:
        if self._beats is None or not self._beats.is_alive():
            self._beats = _JobHeartbeats(self)
            self._beats.start()
        return self._beats


class _JobHeartbeats(threading.Thread):
    """Refreshes the running job's heartbeat for an InProcessWorker, looking every `job_monitoring_interval`.
    Starting and ending a job only swaps `current`: no wake-up, so the thread never competes with a job's first
    milliseconds for the GIL. A job that runs a whole interval has been refreshed at least once by then."""

    def __init__(self, worker: InProcessWorker):
        super().__init__(name="job-heartbeat", daemon=True)
        # Weak: run_worker builds a new worker after a Redis outage, and the old one's thread must end with it.
        self._worker = weakref.ref(worker)
        self.interval = worker.job_monitoring_interval
        self.lock = threading.Lock()
        self.current: tuple[Job, Execution] | None = None

    def watch(self, job: Job | None, execution: Execution | None) -> None:
        # The lock makes the end of a job wait for a refresh already under way, so none lands after the end.
        with self.lock:
            self.current = (job, execution) if job is not None and execution is not None else None

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            if not self._beat():
                return

    def _beat(self) -> bool:
        """One look; False once the worker is gone (the strong reference lives only for this call)."""
        worker = self._worker()
        if worker is None:
            return False
        with self.lock:
            watched = self.current
            if watched is not None:
                try:
                    worker.maintain_heartbeats(*watched)
                except redis.exceptions.RedisError as exc:  # the job will meet the outage too; try until it ends
                    if outage_kind(exc) is None:
                        raise
                    log.warning("job heartbeat failed", extra={"job_id": watched[0].id, "error": str(exc)[:200]})
        return True


def run_worker(burst: bool = False, fork: bool = False, name: str | None = None) -> int:
    runtime = _runtime(graph=True)
    services = Services(runtime)
    # Build the clients (and the card models) now, before any job (or, with --fork, before RQ forks work horses,
    # so every job inherits them).
    for component in ("grants", "receipts", "notifier", "reconciler", "foreign_scan"):
        getattr(services, component)
    prepare_cards()
    install(services)
    freeze_startup_objects()
    worker_cls: Any = ForkingWorker if fork else InProcessWorker

    def build(worker_name: str) -> Any:
        return worker_cls(q.worker_queues(runtime.redis, q.ClaimingQueue), connection=runtime.redis,
                          serializer=JSONSerializer, job_class=q.JSONJob, queue_class=q.ClaimingQueue, name=worker_name,
                          job_monitoring_interval=q.heartbeat_interval_s(runtime.settings.reconcile_interval_s))

    worker = build(name or f"breakglass-{socket.gethostname()}-{os.getpid()}")
    watch = outage_watch(services, "worker")
    watchdog = ReconcileWatchdog(services, runtime.settings.reconcile_interval_s, watch, worker.name)
    if not burst:
        watchdog.start()
    log.info("worker starting", extra={"queues": list(q.QUEUE_NAMES), "fork": fork,
                                       "grant_mode": runtime.settings.grant_mode})
    shutdown = Shutdown()

    def work(generation: int) -> bool:
        nonlocal worker
        if generation > 1:  # the old registration may still look alive; the new loop takes a fresh name
            worker = build(f"{worker.name.split('~')[0]}~{generation}")
        worker.work(burst=burst, logging_level=runtime.settings.log_level, with_scheduler=False)
        # Anything but burst or a stop: RQ gave up on an error (Redis gone or refusing writes mid-loop).
        return burst or stopping()

    def stopping() -> bool:
        # A SIGTERM while idle ends RQ's loop without setting _stop_requested (only the busy path sets it); both
        # record the shutdown request date. Between loops our own handler sets `shutdown`.
        return shutdown.is_set() or worker._stop_requested or worker._shutdown_requested_date is not None

    try:
        return survive_redis_outages(work, watch, "worker", stopping, shutdown)
    finally:
        watchdog.leave()


class Shutdown(threading.Event):
    """Set by SIGTERM/SIGINT while no RQ loop runs (each loop installs RQ's own handlers): a process that was asked
    to stop never waits for Redis again and never starts another loop."""

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.set())


def survive_redis_outages(run: Callable[[int], bool], watch: OutageWatch, what: str,
                          stopping: Callable[[], bool] = lambda: False, shutdown: Shutdown | None = None) -> int:
    """Keep a worker or scheduler alive through a Redis outage: a restart or failover, or Redis refusing writes
    (full, read-only, MISCONF, loading). RQ's worker quits on most Redis errors and rq-scheduler on all of them,
    which would leave nobody to run scheduled revocations: when a loop ends without being asked to, wait (backing
    off) until Redis takes writes again and start a fresh loop. Once asked to stop (SIGTERM), return at once,
    whatever Redis is doing. A loop that keeps failing while Redis is fine is restarted at most
    MAX_RESTARTS_PER_HOUR times, then the process exits non-zero for its supervisor."""
    shutdown = shutdown or Shutdown()
    asked = stopping

    def stopping() -> bool:
        return shutdown.is_set() or asked()

    restarts: list[float] = []
    for generation in itertools.count(1):
        try:
            if run(generation):
                return 0
            reason = "loop ended unexpectedly"
        except Exception as exc:
            if watch.failed(exc) is None and not stopping():
                raise
            reason = f"lost Redis ({type(exc).__name__})"
        shutdown.install()
        if stopping():
            log.info("%s stopping as asked", what)
            return 0
        if not watch.writable():
            if not watch.wait_until_writable(stopping, shutdown.wait):
                log.info("%s stopping as asked (Redis still refusing writes)", what)
                return 0
            log.info("%s resuming after a Redis outage", what)
            continue  # an outage is no reason to give up on the process
        watch.ended()
        log.error("%s %s; restarting it", what, reason)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 3600] + [now]
        if len(restarts) > MAX_RESTARTS_PER_HOUR:
            log.error("%s restarted too often; exiting", what)
            return 1
    return 1  # unreachable: itertools.count never ends


def ensure_periodic(scheduler: Scheduler, reconcile_every_s: int, watch_every_s: int = 0) -> None:
    """Register the periodic jobs once (fixed ids), whoever starts first."""
    periodic = [("periodic-reconcile", q.RECONCILE, reconcile_every_s),
                ("periodic-foreign-scan", q.SCAN_FOREIGN, FOREIGN_SCAN_EVERY_S),
                ("periodic-review", q.POST_REVIEW, REVIEW_CHECK_EVERY_S)]
    if watch_every_s > 0:
        periodic.append(("periodic-emergency-watch", q.WATCH_EMERGENCY, watch_every_s))
    for jid, func, every in periodic:
        if jid in scheduler:
            continue
        scheduler.schedule(datetime.now(UTC).replace(tzinfo=None), func, interval=every, repeat=None, id=jid,
                           timeout=300, result_ttl=600, queue_name=q.queue_for(func))


class NoWorkerAlarm:
    """The scheduler's look at the worker roll, a quarter reconcile period apart: with no worker alive nothing
    is granted or revoked (but by Entra's own PIM expiry), so on-call hears of it once per absence, within one
    reconcile period of the last worker's end. A grace of one period after start lets the workers come up."""

    def __init__(self, services: Services, watch: OutageWatch, clock: Callable[[], float] = time.monotonic):
        settings = services.settings
        self.services = services
        self.watch = watch
        self.clock = clock
        self.interval_s = settings.reconcile_interval_s
        self.roll = q.WorkerRoll(services.runtime.redis, settings.key_prefix, self.interval_s)
        self.marker = f"{settings.key_prefix}:alerted:no-worker"
        self.next_look = clock() + self.interval_s

    def check(self) -> None:
        if self.clock() < self.next_look:
            return
        self.next_look = self.clock() + self.interval_s / 4
        redis_client = self.services.runtime.redis
        try:
            if self.roll.alive():
                if redis_client.delete(self.marker):
                    log.warning("a worker is running again")
                return
            if not redis_client.set(self.marker, b"1", nx=True):
                return
        except Exception as exc:
            if self.watch.failed(exc) is None:
                log.exception("worker roll check failed")
            return
        log.error("no breakglass worker is running: nothing is granted or revoked until one starts")
        self.services.notifier.alert("No breakglass worker is running", [
            ("Effect", "approved requests are not granted and ending grants are not revoked (PIM still ends them "
                       "at their expiry)"),
            ("Since", f"no worker heard from for {self.roll.stale_after_s:.0f} s"),
            ("Do", "start `breakglass worker` (check its supervisor and logs); the reconciler catches up")],
            "critical")


def run_scheduler(burst: bool = False) -> int:
    runtime = _runtime(graph=False)
    settings = runtime.settings
    services = Services(runtime)
    watch = outage_watch(services, "scheduler")
    alarm = NoWorkerAlarm(services, watch)
    log.info("scheduler starting", extra={"interval_s": settings.scheduler_interval_s})

    def run(generation: int) -> bool:
        # A fresh instance (and name) per loop: the previous one may still look registered after losing Redis.
        scheduler = q.AlignedScheduler(queue=q.JSONQueue(connection=runtime.redis), connection=runtime.redis,
                                       interval=settings.scheduler_interval_s, job_class=q.JSONJob,
                                       queue_class=q.JSONQueue)
        ensure_periodic(scheduler, settings.reconcile_interval_s, settings.watch_interval_s)
        if not burst:
            scheduler.after_tick = alarm.check
        scheduler.run(burst=burst)  # returns only in burst mode; SIGTERM raises SystemExit
        return True

    return survive_redis_outages(run, watch, "scheduler")
