"""`breakglass worker` runs jobs in its own process by default (no fork per job). A forking worker's main process
refreshes a running job's heartbeat while the work horse works; the in-process worker must do the same from a
thread, or a job that runs longer than `abandoned_after_s` would look abandoned to JobQueue.pending and the
reconciler would start it again beside the live one."""

from __future__ import annotations

import gc
import threading
import time
from datetime import UTC, datetime

import redis
from rq.serializers import JSONSerializer

from jobs.worker import InProcessWorker
from services.state.queue import JobQueue, JSONJob, JSONQueue

RELEASE = threading.Event()
STARTED = threading.Event()


def long_job() -> str:
    """Runs until the test has watched enough heartbeats (bounded, so a broken test cannot hang)."""
    STARTED.set()
    RELEASE.wait(30)
    return "done"


def test_a_long_job_keeps_its_heartbeat_and_stays_pending(redis_client: redis.Redis) -> None:
    RELEASE.clear()
    STARTED.clear()
    jobs = JobQueue(redis_client, abandoned_after_s=1.5)
    assert jobs.enqueue(f"{__name__}.long_job", jid="long")
    worker = InProcessWorker([JSONQueue(connection=redis_client)], connection=redis_client,
                             serializer=JSONSerializer, job_class=JSONJob, queue_class=JSONQueue,
                             job_monitoring_interval=1)
    seen: list[datetime] = []
    pending: list[bool] = []
    problems: list[BaseException] = []

    def watch() -> None:
        try:
            STARTED.wait(30)
            deadline = time.monotonic() + 20
            while len(set(seen)) < 4 and time.monotonic() < deadline:
                job = JSONJob.fetch("long", connection=redis_client)
                if job.last_heartbeat is not None:
                    seen.append(job.last_heartbeat)
                pending.append(jobs.pending("long"))
                time.sleep(0.1)  # polling real Redis for the worker's next write
        except BaseException as exc:  # reported below
            problems.append(exc)
        finally:
            RELEASE.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    worker.work(burst=True)
    watcher.join()
    assert not problems
    beats = sorted(set(seen))
    # Four distinct heartbeats about a second apart: over 3 s of work, twice `abandoned_after_s`, never abandoned.
    assert len(beats) >= 4 and (beats[-1] - beats[0]).total_seconds() >= 2
    assert pending and all(pending)
    finished = JSONJob.fetch("long", connection=redis_client)
    assert finished.get_status() == "finished" and finished.return_value() == "done"
    assert not jobs.pending("long")
    # The last beat is this run's (a loaded machine may take seconds between the watcher's last look and here).
    assert (datetime.now(UTC) - beats[-1].replace(tzinfo=UTC)).total_seconds() < 30


def test_a_worker_that_is_gone_takes_its_heartbeat_thread_with_it(redis_client: redis.Redis) -> None:
    # After a Redis outage run_worker builds a new worker: the old one's heartbeat thread must not stay behind.
    worker = InProcessWorker([JSONQueue(connection=redis_client)], connection=redis_client,
                             serializer=JSONSerializer, job_class=JSONJob, queue_class=JSONQueue,
                             job_monitoring_interval=0.05)
    beats = worker._heartbeats()
    assert beats.is_alive()
    del worker
    gc.collect()
    beats.join(timeout=10)
    assert not beats.is_alive()


ORDER: list[str] = []


def note(what: str) -> None:
    ORDER.append(what)


def test_access_jobs_jump_the_queue_of_notifications(redis_client: redis.Redis) -> None:
    # Revocations (and grants, extensions, the reconciler) must not wait behind a backlog of card updates and
    # receipts: after 1,000 activations that backlog is thousands of jobs, and expiries fall due meanwhile.
    from services.state import queue as q

    ORDER.clear()
    jobs = JobQueue(redis_client)
    for i in range(5):
        jobs.queue.enqueue(f"{__name__}.note", f"receipt-{i}", job_id=f"receipt-{i}")
    JSONQueue(q.ACCESS_QUEUE_NAME, connection=redis_client).enqueue(f"{__name__}.note", "revoke", job_id="revoke")
    assert jobs.length() == 6
    worker = InProcessWorker(q.worker_queues(redis_client), connection=redis_client, serializer=JSONSerializer,
                             job_class=JSONJob, queue_class=JSONQueue)
    worker.work(burst=True)
    assert ORDER[0] == "revoke" and sorted(ORDER[1:]) == [f"receipt-{i}" for i in range(5)]
    assert jobs.length() == 0


def test_access_jobs_are_routed_to_the_access_queue(redis_client: redis.Redis) -> None:
    from services.state import queue as q

    jobs = JobQueue(redis_client)
    for func in (q.ACTIVATE_GRANT, q.REVOKE_GRANT, q.EXTEND_GRANT, q.RECONCILE):
        assert q.queue_for(func) == q.ACCESS_QUEUE_NAME
    for func in (q.UPDATE_CARDS, q.POST_RECEIPT, q.NOTIFY_APPROVERS, q.NOTIFY_DECISION, q.SEND_REQUEST_CARD):
        assert q.queue_for(func) == q.QUEUE_NAME
    jobs.enqueue(q.REVOKE_GRANT, "BG-AAAAAA", 1, jid="r")
    jobs.enqueue(q.POST_RECEIPT, "BG-AAAAAA", "activated", 1, jid="p")
    assert JSONQueue(q.ACCESS_QUEUE_NAME, connection=redis_client).job_ids == ["r"]
    assert jobs.queue.job_ids == ["p"]
    from datetime import timedelta
    jobs.enqueue_at(datetime.now(UTC) + timedelta(hours=1), q.REVOKE_GRANT, "BG-BBBBBB", 1, jid="later")
    assert JSONJob.fetch("later", connection=redis_client).origin == q.ACCESS_QUEUE_NAME


def test_a_new_job_is_queued_exactly_like_a_checked_one(redis_client: redis.Redis) -> None:
    from services.state import queue as q

    jobs = JobQueue(redis_client)
    jobs.enqueue(q.ACTIVATE_GRANT, "BG-AAAAAA", jid="checked")
    jobs.enqueue_new(q.ACTIVATE_GRANT, "BG-AAAAAA", jid="new")
    assert JSONQueue(q.ACCESS_QUEUE_NAME, connection=redis_client).job_ids == ["checked", "new"]
    checked, new = (JSONJob.fetch(j, connection=redis_client) for j in ("checked", "new"))
    for job in (checked, new):
        assert job.get_status() == "queued" and job.func_name == q.ACTIVATE_GRANT and job.args == ["BG-AAAAAA"]
    assert (new.timeout, new.result_ttl, new.failure_ttl) == (checked.timeout, checked.result_ttl, checked.failure_ttl)
    assert jobs.pending("new") and not jobs.enqueue(q.ACTIVATE_GRANT, "BG-AAAAAA", jid="new")


SEEN: dict[str, dict[str, object]] = {}


def snapshot(label: str) -> str:
    """What a running job looks like in Redis, from inside the job."""
    from rq import get_current_job
    from rq.registry import StartedJobRegistry

    job = get_current_job()
    assert job is not None
    conn = job.connection
    fresh = JSONJob.fetch(job.id, connection=conn)
    worker_key = f"rq:worker:{fresh.worker_name}"
    SEEN[label] = {
        "status": fresh.get_status(), "has_worker": bool(fresh.worker_name), "started": fresh.started_at is not None,
        "heartbeat": fresh.last_heartbeat is not None, "ttl": conn.ttl(fresh.key),
        "in_started_registry": job.id in StartedJobRegistry(fresh.origin, connection=conn).get_job_ids(),
        "executions": len(conn.zrange(f"rq:executions:{job.id}", 0, -1)),
        "worker_state": (conn.hget(worker_key, "state") or b"").decode(),
        "worker_beat": conn.hget(worker_key, "last_heartbeat") is not None, "worker_ttl": conn.ttl(worker_key) > 0,
    }
    return label


def test_a_job_starts_with_the_same_redis_records_as_under_rqs_own_worker(redis_client: redis.Redis) -> None:
    # InProcessWorker writes RQ 3.0's start-of-job records in one transaction instead of RQ's three round trips;
    # what a running job looks like to RQ (registries, execution, job and worker hashes) must not change.
    from rq import SimpleWorker

    jobs = JobQueue(redis_client)
    for label, cls in (("rq", SimpleWorker), ("ours", InProcessWorker)):
        assert jobs.enqueue(f"{__name__}.snapshot", label, jid=f"snap-{label}")
        worker = cls([JSONQueue(connection=redis_client)], connection=redis_client, serializer=JSONSerializer,
                     job_class=JSONJob, queue_class=JSONQueue, job_monitoring_interval=1)
        worker.work(burst=True)
        assert JSONJob.fetch(f"snap-{label}", connection=redis_client).get_status() == "finished"
    assert SEEN["ours"] == SEEN["rq"]
    assert SEEN["ours"]["status"] == "started" and SEEN["ours"]["in_started_registry"]
    assert SEEN["ours"]["executions"] == 1 and SEEN["ours"]["worker_state"] == "busy"


def test_leaving_the_command_channel_is_prompt(redis_client: redis.Redis) -> None:
    """A SIGTERM ends the worker through RQ's teardown, which leaves the command channel and joins its thread. When
    the unsubscribe wins the race, redis-py's thread first waits out its poll for a subscription (60 s in RQ), and a
    deploy's old worker with it: ours polls each second."""
    for _ in range(5):  # the race goes either way; five rounds lose it at least once without the fix
        worker = InProcessWorker([JSONQueue(connection=redis_client)], connection=redis_client,
                                 serializer=JSONSerializer, job_class=JSONJob, queue_class=JSONQueue)
        worker.subscribe()
        started = time.monotonic()
        worker.unsubscribe()
        assert time.monotonic() - started < 5
