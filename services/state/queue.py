"""The seam between the entry points and the RQ workers: queue names, deterministic job ids, and enqueueing by
function path (so bot/ never imports jobs/). Jobs are stored as JSON, never pickle: a worker must never
unpickle what is in Redis, including jobs created by rq-scheduler (whose default is pickle).
"""

from __future__ import annotations

import logging
import math
import re
import signal
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import utcformat
from rq_scheduler import Scheduler

from services.clock import Clock, SystemClock
from services.state.commit import Ops, pipeline_ops

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
WATCH_EMERGENCY = "jobs.emergency.watch"
DRIVE_EMERGENCY = "jobs.emergency.drive_incident"
POST_REVIEW = "jobs.review.post_review"
# Follow-up steps (services.workflow.followup): planned once the grant or its removal is verified, each step its own
# job on the ordinary queue, so none of them can hold up an access job.
PLAN_STEPS = "jobs.followup.plan_steps"
RUN_STEP = "jobs.followup.run_step"
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


class WorkerRoll:
    """Which workers are alive: each says so every quarter reconcile period (its watchdog thread), and one unheard
    of for half a period is gone. RQ's own registration cannot tell: an idle worker refreshes it only every ~7
    minutes, and a killed one stays registered that long. The scheduler alerts from this, /readyz and doctor
    report it."""

    def __init__(self, client: redis.Redis, prefix: str, reconcile_interval_s: float):
        self.redis = client
        self.key = f"{prefix}:workers:alive"
        self.stale_after_s = reconcile_interval_s / 2

    def beat(self, name: str) -> None:
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key, {name: now})
            pipe.zremrangebyscore(self.key, "-inf", now - 3600)
            pipe.execute()

    def gone(self, name: str) -> None:
        self.redis.zrem(self.key, name)

    def alive(self) -> list[str]:
        return [m.decode() for m in self.redis.zrangebyscore(self.key, time.time() - self.stale_after_s, "+inf")]


class AlignedScheduler(Scheduler):
    """rq-scheduler with its ticks on whole seconds. Scores are whole seconds and stock rq-scheduler ticks every
    `interval` from whenever the process started, so a job due at second S waited up to a further second for the
    next tick; ticking just after each whole second enqueues it at S + TICK_LAG_S. Grants start and end on whole
    seconds (GrantService.activate), so an expiry is enqueued within milliseconds of its time."""

    # Called after every tick: the scheduler's other duties (noticing that no worker is running).
    after_tick: Any = None

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
                if self.after_tick is not None:
                    self.after_tick()
                time.sleep(seconds_to_next_tick(time.time(), self._interval))
        finally:
            self._leave()

    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT exit at once. rq-scheduler's own handler writes to Redis first, and with Redis down that
        write raised instead of the exit, so the process went on waiting for Redis; `run` leaves best effort."""

        def stop(signum: int, frame: Any) -> None:
            raise SystemExit(0)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def _leave(self) -> None:
        """Give up the lock and register the end, if Redis lets us: never in place of the error or exit that is
        ending the loop (the lock expires by itself; the registration with its heartbeat)."""
        try:
            self.remove_lock()
            self.register_death()
        except redis.exceptions.RedisError as exc:
            log.warning("scheduler could not register its end", extra={"error": str(exc)[:200]})


class JSONQueue(Queue):
    job_class = JSONJob

    def __init__(self, name: str = QUEUE_NAME, connection: redis.Redis | None = None, **kwargs: Any):
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = JSONJob
        super().__init__(name=name, connection=connection, **kwargs)


# A worker takes a job in two steps: BLPOP (Redis hands it the id, even while the process is frozen) and a read of
# the job's hash. Between the two, and for ever if the worker dies, the job is in no queue and no registry, its
# hash still says "queued": the reconciler pushes such an id back (JobQueue.redrive). This read is also the claim
# that makes that safe: only a worker that finds the job "queued" runs it, and it marks it started (with a
# heartbeat, so a worker that dies right after is seen as gone) in the same script. A second copy of the id, pushed
# back while a live worker was between its two steps, is skipped by whoever pops it later.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status ~= 'queued' then return {} end
redis.call('HSET', KEYS[1], 'status', 'started', 'last_heartbeat', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


class ClaimingQueue(JSONQueue):
    """The worker's view of the queues: a dequeued job is claimed in the round trip that reads it (see _CLAIM);
    RQ dequeues again when the claim fails, as it does for a job whose hash is gone."""

    @classmethod
    def _fetch_dequeued_job(cls, connection: redis.Redis, queue_key: str, job_id: str, job_class: Any = None,
                            serializer: Any = None, death_penalty_class: Any = None) -> tuple[Job, Queue] | None:
        queue = cls.from_queue_key(queue_key, connection=connection, job_class=JSONJob,
                                   serializer=JSONSerializer, death_penalty_class=death_penalty_class)
        claim = connection.register_script(_CLAIM)
        raw = claim(keys=[JSONJob.key_for(job_id)], args=[utcformat(datetime.now(UTC))])
        if not raw:
            if raw is not None:  # [] : someone else claimed it, or it already ran
                log.info("skipped a job that is no longer queued", extra={"job_id": job_id})
            return None
        job = JSONJob(job_id, connection=connection)
        job.restore(dict(zip(raw[::2], raw[1::2], strict=True)))
        return job, queue


def worker_queues(connection: redis.Redis, queue_class: type[JSONQueue] = JSONQueue) -> list[JSONQueue]:
    """The queues a worker takes jobs from, access jobs first."""
    return [queue_class(name, connection=connection) for name in QUEUE_NAMES]


def heartbeat_interval_s(reconcile_interval_s: float) -> int:
    """How often a worker refreshes a running job's heartbeat (RQ takes whole seconds): 5 s for a 30 s period."""
    return max(1, round(reconcile_interval_s / 6))


def abandoned_after_s(reconcile_interval_s: float) -> float:
    """A started job whose heartbeat is this old belongs to a dead worker: 20 s for a 30 s period, and never
    fewer than three missed heartbeats."""
    return max(3 * heartbeat_interval_s(reconcile_interval_s), reconcile_interval_s * 2 / 3)


def _queue_key(name: str) -> str:
    return f"{Queue.redis_queue_namespace_prefix}{name}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def job_id(*parts: object) -> str:
    """Deterministic ids: the same logical job always has the same id, so a duplicate enqueue is a no-op.
    RQ accepts only letters, digits, '_' and '-'."""
    return "_".join(_UNSAFE.sub("-", str(p)) for p in parts)


class JobState(StrEnum):
    """Where a job id stands, as the reconciler needs to know it."""

    WAITING = "waiting"  # in its queue
    SCHEDULED = "scheduled"  # on rq-scheduler's schedule, not yet overdue
    RUNNING = "running"  # started, its heartbeat fresh
    ORPHANED = "orphaned"  # its hash says queued, but it is in no queue: taken by a worker that died or froze
    ABANDONED = "abandoned"  # started, its heartbeat stale: the worker died mid-job
    OVERDUE = "overdue"  # scheduled, but rq-scheduler did not move it in time
    GONE = "gone"  # no hash, or finished, failed, cancelled

    @property
    def in_hand(self) -> bool:
        return self in {JobState.WAITING, JobState.SCHEDULED, JobState.RUNNING}


# Pushes an orphaned job's id back onto its queue, only if its hash still says "queued" and the id is still in no
# queue: a live worker that claimed it meanwhile (see _CLAIM) wins, and nothing is pushed.
_REPUSH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return 0 end
if ARGV[2] == '1' then redis.call('LPUSH', KEYS[2], ARGV[1]) else redis.call('RPUSH', KEYS[2], ARGV[1]) end
return 1
"""


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
        self._repush = client.register_script(_REPUSH)

    def pending(self, jid: str) -> bool:
        return self.look([jid])[jid].in_hand

    def look(self, jids: list[str]) -> dict[str, JobState]:
        """Where each job stands: one pipelined read for all of them, and one more only for jobs that say they
        are queued (is the id really in its queue?)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for jid in jids:
                self._read_job(pipe, jid)
            replies = pipe.execute()
        read = {jid: self._state(jid, replies[2 * i], replies[2 * i + 1]) for i, jid in enumerate(jids)}
        states = {jid: state for jid, (state, _) in read.items()}
        queued = {jid: origin for jid, (state, origin) in read.items() if origin is not None}
        if queued:
            with self.redis.pipeline(transaction=False) as pipe:
                for jid, origin in queued.items():
                    pipe.lpos(_queue_key(origin), jid)
                found = pipe.execute()
            for jid, position in zip(queued, found, strict=True):
                states[jid] = JobState.WAITING if position is not None else JobState.ORPHANED
        return states

    def _read_job(self, pipe: Any, jid: str) -> Any:
        """Queue the reads `_state` needs: the job's hash and its schedule score."""
        return pipe.hgetall(JSONJob.key_for(jid)).zscore(self.scheduler.scheduled_jobs_key, jid)

    def _state(self, jid: str, raw: dict[bytes, bytes], score: float | None) -> tuple[JobState, str | None]:
        """Where the job (its hash `raw` and schedule `score`, read together) stands. A queued job is taken to be
        WAITING, and the name of the queue it should be in comes with it, for a caller that looks there."""
        if not raw:
            return JobState.GONE, None
        job = JSONJob(jid, connection=self.redis)
        try:
            job.restore(raw)
        except NoSuchJobError:
            return JobState.GONE, None
        status = job.get_status(refresh=False)
        if score is not None:
            late = float(score) <= datetime.now(UTC).timestamp() - OVERDUE_AFTER_S
            return (JobState.OVERDUE if late else JobState.SCHEDULED), None
        if status == JobStatus.QUEUED:
            return JobState.WAITING, job.origin or QUEUE_NAME
        if status in WAITING_STATUSES:
            return (JobState.WAITING if status != JobStatus.SCHEDULED else JobState.OVERDUE), None
        if status == JobStatus.STARTED:
            beat = job.last_heartbeat or job.started_at
            if beat is not None:
                age = (datetime.now(UTC) - beat.replace(tzinfo=UTC)).total_seconds()
                return (JobState.RUNNING if age < self.abandoned_after_s else JobState.ABANDONED), None
            return JobState.RUNNING, None
        return JobState.GONE, None

    def redrive(self, func: str, *args: object, jid: str, timeout: int = 120, at_front: bool = False,
                state: JobState | None = None) -> bool:
        """Put a job that is no longer in hand back to work under its own id: an orphaned one is pushed back onto
        its queue as it is (compare-and-set against a worker claiming it meanwhile); any other is enqueued anew.
        False when it is in hand after all."""
        state = state or self.look([jid])[jid]
        if state.in_hand:
            return False
        if state is JobState.ORPHANED:
            return bool(self._repush(keys=[JSONJob.key_for(jid), self._queue(func).key], args=[jid, int(at_front)]))
        return self.enqueue(func, *args, jid=jid, timeout=timeout, at_front=at_front)

    def enqueue(self, func: str, *args: object, jid: str, timeout: int = 120, at_front: bool = False) -> bool:
        """Returns False when a job with this id is already queued, running or scheduled (a job whose hash says
        queued counts as queued here: only the reconciler, through `redrive`, looks further).

        Two round trips: the lock is taken and the job read in one pipeline; the job is written, pushed and the
        lock released in one transaction."""
        lock_key = f"rq:bg-enqueue-lock:{jid}"
        with self.redis.pipeline(transaction=False) as pipe:
            locked, raw, score = self._read_job(pipe.set(lock_key, b"1", nx=True, px=2000), jid).execute()
        if not locked:
            return False
        try:
            state, _ = self._state(jid, raw, score)
        except BaseException:
            self.redis.delete(lock_key)
            raise
        if state.in_hand:
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

    def new_job_ops(self, func: str, *args: object, jid: str, timeout: int = 120) -> Ops:
        """The writes `enqueue_new` makes (RQ's own), for a Commit that makes the job due in the same round trip as
        the change that makes it due."""
        return pipeline_ops(self.redis, lambda pipe: self._write(pipe, func, args, jid, timeout))

    def enqueue_new(self, func: str, *args: object, jid: str, timeout: int = 120) -> None:
        """One round trip, no duplicate check: only for a job whose id nobody can have queued yet, because the
        compare-and-set that made it due is its only caller (an approval's grant job). The reconciler re-drives
        the same id only once the request's deadline has passed and the job is in no queue, registry or schedule
        (`redrive`), and the job is idempotent besides."""
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
