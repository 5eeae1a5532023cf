"""The seam between the entry points and the RQ workers: queue names, deterministic job ids, and enqueueing by
function path (so bot/ never imports jobs/). Jobs are stored as JSON, never pickle: a worker must never
unpickle what is in Redis, including jobs created by rq-scheduler (whose default is pickle).
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from services.clock import Clock, SystemClock

log = logging.getLogger(__name__)

QUEUE_NAME = "breakglass"
# Jobs that change or protect access (grant, revoke, extend, the reconciler) have their own queue, which every
# worker empties first: a revocation never waits behind a backlog of card updates and receipts (1,000 activations
# leave ~3,000 of those), and an approval's grant job never waits behind anything but other access jobs.
ACCESS_QUEUE_NAME = "breakglass-access"
QUEUE_NAMES = (ACCESS_QUEUE_NAME, QUEUE_NAME)  # priority order

# Job functions, by import path. Arguments are JSON scalars (request ids, generations, attempt numbers).
ACTIVATE_GRANT = "jobs.grant.activate_grant"
REVOKE_GRANT = "jobs.revoke.revoke_grant"
EXTEND_GRANT = "jobs.grant.extend_grant"
NOTIFY_APPROVERS = "jobs.notify.notify_approvers"
NOTIFY_DECISION = "jobs.notify.notify_decision"
NOTIFY_EXTENSION_ASKED = "jobs.notify.notify_extension_asked"
UPDATE_CARDS = "jobs.notify.update_cards"
POST_RECEIPT = "jobs.receipts.post_receipt"
RECONCILE = "jobs.reconcile.reconcile"
SCAN_FOREIGN = "jobs.reconcile.scan_foreign_assignments"
SEND_REQUEST_CARD = "jobs.notify.send_request_card"
POLICY_WEAKENED = "jobs.notify.policy_weakened"
ACCESS_JOBS = frozenset({ACTIVATE_GRANT, REVOKE_GRANT, EXTEND_GRANT, RECONCILE})


def queue_for(func: str) -> str:
    return ACCESS_QUEUE_NAME if func in ACCESS_JOBS else QUEUE_NAME

WAITING_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
# Workers refresh a running job's heartbeat every JOB_MONITORING_INTERVAL_S; a started job whose heartbeat is
# older than ABANDONED_AFTER_S belongs to a worker that died (kill -9, OOM) and will never finish. Both follow the
# reconciler period (BREAKGLASS_RECONCILE_INTERVAL, 30 s by default; see heartbeat_interval_s/abandoned_after_s),
# so that one setting paces the whole safety net.
JOB_MONITORING_INTERVAL_S = 5
ABANDONED_AFTER_S = 20
# A scheduled job this far past its time means rq-scheduler is not running; it no longer counts as pending. (Scores
# are rounded up to whole seconds and the scheduler ticks just after every second, so a live scheduler is never this
# late.)
OVERDUE_AFTER_S = 2


class JSONJob(Job):
    """An RQ job that always (de)serialises with JSON, whoever created it."""

    def __init__(self, id: str | None = None, connection: redis.Redis | None = None, serializer: Any = None):
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> JSONJob:
        kwargs["serializer"] = JSONSerializer
        return super().create(*args, **kwargs)  # type: ignore[return-value]

    @classmethod
    def fetch(cls, id: str, connection: redis.Redis | None = None, serializer: Any = None) -> JSONJob:
        return super().fetch(id, connection=connection, serializer=JSONSerializer)  # type: ignore[return-value]


# How long after a whole second the scheduler ticks: enough for the second to have begun on this host's clock.
TICK_LAG_S = 0.01


def seconds_to_next_tick(now: float, interval: float) -> float:
    """Time until the next tick on the grid of whole multiples of `interval` (plus TICK_LAG_S)."""
    return (math.floor((now - TICK_LAG_S) / interval) + 1) * interval + TICK_LAG_S - now


class AlignedScheduler(Scheduler):
    """rq-scheduler with its ticks on whole seconds. Scores are whole seconds and stock rq-scheduler ticks every
    `interval` from whenever the process started, so a job due at second S waited up to a further second for the
    next tick; ticking just after each whole second enqueues it at S + TICK_LAG_S. Grants start and end on whole
    seconds (GrantService.activate), so an expiry is enqueued within milliseconds of its time."""

    def tick(self) -> bool:
        """One pass: move due jobs to the queue. False when another scheduler holds the lock."""
        self.heartbeat()
        if not self.acquire_lock():
            self.log.debug("another scheduler holds the lock; skipping this tick")
            return False
        try:
            self.enqueue_jobs()
            self.heartbeat()
        finally:
            self.remove_lock()
        return True

    def run(self, burst: bool = False) -> None:
        self.register_birth()
        self._install_signal_handlers()
        try:
            while not (self.tick() and burst):
                time.sleep(seconds_to_next_tick(time.time(), self._interval))
        finally:
            self.remove_lock()
            self.register_death()


class JSONQueue(Queue):
    job_class = JSONJob

    def __init__(self, name: str = QUEUE_NAME, connection: redis.Redis | None = None, **kwargs: Any):
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = JSONJob
        super().__init__(name=name, connection=connection, **kwargs)


def worker_queues(connection: redis.Redis) -> list[JSONQueue]:
    """The queues a worker takes jobs from, access jobs first."""
    return [JSONQueue(name, connection=connection) for name in QUEUE_NAMES]


def heartbeat_interval_s(reconcile_interval_s: float) -> int:
    """How often a worker refreshes a running job's heartbeat (RQ takes whole seconds): 5 s for a 30 s period."""
    return max(1, round(reconcile_interval_s / 6))


def abandoned_after_s(reconcile_interval_s: float) -> float:
    """A started job whose heartbeat is this old belongs to a dead worker: 20 s for a 30 s period, and never
    fewer than three missed heartbeats."""
    return max(3 * heartbeat_interval_s(reconcile_interval_s), reconcile_interval_s * 2 / 3)


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def job_id(*parts: object) -> str:
    """Deterministic ids: the same logical job always has the same id, so a duplicate enqueue is a no-op.
    RQ accepts only letters, digits, '_' and '-'."""
    return "_".join(_UNSAFE.sub("-", str(p)) for p in parts)


class JobQueue:
    """Enqueue now or at a time, at most once per job id while that job is pending."""

    def __init__(self, client: redis.Redis, name: str = QUEUE_NAME, clock: Clock | None = None,
                 abandoned_after_s: float = ABANDONED_AFTER_S):
        self.redis = client
        self.clock: Clock = clock or SystemClock()
        self.abandoned_after_s = abandoned_after_s
        self.queue = JSONQueue(name, connection=client)
        self.access_queue = JSONQueue(ACCESS_QUEUE_NAME, connection=client)
        self.scheduler = Scheduler(queue=self.queue, connection=client, job_class=JSONJob, queue_class=JSONQueue)

    def pending(self, jid: str) -> bool:
        with self.redis.pipeline(transaction=False) as pipe:
            raw, score = self._read_job(pipe, jid).execute()
        return self._pending(jid, raw, score)

    def _read_job(self, pipe: Any, jid: str) -> Any:
        """Queue the reads `_pending` needs: the job's hash and its schedule score."""
        return pipe.hgetall(JSONJob.key_for(jid)).zscore(self.scheduler.scheduled_jobs_key, jid)

    def _pending(self, jid: str, raw: dict[bytes, bytes], score: float | None) -> bool:
        """Whether the job (its hash `raw` and schedule `score`, read together) is queued, running or scheduled."""
        if not raw:
            return False
        job = JSONJob(jid, connection=self.redis)
        try:
            job.restore(raw)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if score is not None:
            return float(score) > datetime.now(UTC).timestamp() - OVERDUE_AFTER_S
        if status in WAITING_STATUSES:
            return status != JobStatus.SCHEDULED
        if status == JobStatus.STARTED:
            beat = job.last_heartbeat or job.started_at
            if beat is not None:
                age = (datetime.now(UTC) - beat.replace(tzinfo=UTC)).total_seconds()
                return age < self.abandoned_after_s
            return True
        return False

    def enqueue(self, func: str, *args: object, jid: str, timeout: int = 120, at_front: bool = False) -> bool:
        """Returns False when a job with this id is already queued, running or scheduled.

        Two round trips: the lock is taken and the job read in one pipeline; the job is written, pushed and the
        lock released in one transaction."""
        lock_key = f"rq:bg-enqueue-lock:{jid}"
        with self.redis.pipeline(transaction=False) as pipe:
            locked, raw, score = self._read_job(pipe.set(lock_key, b"1", nx=True, px=2000), jid).execute()
        if not locked:
            return False
        try:
            pending = self._pending(jid, raw, score)
        except BaseException:
            self.redis.delete(lock_key)
            raise
        if pending:
            self.redis.delete(lock_key)
            return False
        with self.redis.pipeline() as pipe:
            self._write(pipe, func, args, jid, timeout, at_front)
            pipe.delete(lock_key)
            pipe.execute()
        return True

    def _write(self, pipe: Any, func: str, args: tuple[object, ...], jid: str, timeout: int,
               at_front: bool = False) -> None:
        self._queue(func).enqueue(func, *args, job_id=jid, job_timeout=timeout, result_ttl=3600,
                                  failure_ttl=7 * 86400, at_front=at_front, pipeline=pipe)

    def enqueue_new(self, func: str, *args: object, jid: str, timeout: int = 120) -> None:
        """One round trip, no duplicate check: only for a job whose id nobody can have queued yet, because the
        compare-and-set that made it due is its only caller (an approval's grant job). The reconciler's own
        enqueue of the same id waits until the record has been still for a reconcile period, and the job is
        idempotent besides."""
        with self.redis.pipeline() as pipe:
            self._write(pipe, func, args, jid, timeout)
            pipe.execute()

    def enqueue_at(self, when: datetime, func: str, *args: object, jid: str, timeout: int = 120) -> bool:
        """Schedule through rq-scheduler (1 s resolution). An existing schedule for the id is moved, not doubled."""
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")
        # rq-scheduler keeps whole seconds and fires a job once its second has begun; rounding down would fire up
        # to a second early (before a Retry-After, before an expiry), so round up to the next whole second.
        real = self.clock.to_real(when).astimezone(UTC)
        second = math.ceil(real.timestamp())
        utc = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
        if jid in self.scheduler:
            if self.redis.exists(JSONJob.key_for(jid)):
                self.redis.zadd(self.scheduler.scheduled_jobs_key, {jid: second})
                return False
            self.scheduler.cancel(jid)  # a schedule entry whose job is gone would fire nothing: make it anew
        self.scheduler.enqueue_at(utc, func, *args, job_id=jid, timeout=timeout, queue_name=self._queue(func).name,
                                  job_result_ttl=3600)
        return True

    def cancel(self, jid: str) -> None:
        self.scheduler.cancel(jid)
        try:
            JSONJob.fetch(jid, connection=self.redis).delete()
        except NoSuchJobError:
            pass

    def scheduled_at(self, jid: str) -> datetime | None:
        score = self.redis.zscore(self.scheduler.scheduled_jobs_key, jid)
        if score is None:
            return None
        return self.clock.from_real(datetime.fromtimestamp(float(score), UTC))

    def _queue(self, func: str) -> JSONQueue:
        return self.access_queue if queue_for(func) == ACCESS_QUEUE_NAME else self.queue

    def length(self) -> int:
        """Jobs waiting in both queues."""
        return len(self.access_queue) + len(self.queue)
