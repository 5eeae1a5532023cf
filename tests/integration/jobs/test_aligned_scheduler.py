"""AlignedScheduler.tick(): one pass of `breakglass scheduler`'s loop against real Redis — due jobs move to the
queue as JSON jobs, future ones stay, and a second scheduler skips its pass while the first holds the lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from services.state.queue import AlignedScheduler, JobQueue, JSONJob, JSONQueue


def scheduler(client: redis.Redis) -> AlignedScheduler:
    return AlignedScheduler(queue=JSONQueue(connection=client), connection=client, interval=1, job_class=JSONJob,
                            queue_class=JSONQueue)


def test_a_tick_enqueues_what_is_due_and_leaves_the_rest(redis_client: redis.Redis) -> None:
    jobs = JobQueue(redis_client)
    now = datetime.now(UTC)
    jobs.enqueue_at(now - timedelta(seconds=2), "jobs.revoke.revoke_grant", "BG-AAAAAA", 1, "expired", jid="due")
    jobs.enqueue_at(now + timedelta(hours=1), "jobs.revoke.revoke_grant", "BG-BBBBBB", 1, "expired", jid="later")
    assert scheduler(redis_client).tick() is True
    assert jobs.access_queue.job_ids == ["due"]
    assert jobs.scheduled_at("later") is not None and jobs.scheduled_at("due") is None


def test_a_second_scheduler_skips_its_tick_while_the_lock_is_held(redis_client: redis.Redis) -> None:
    jobs = JobQueue(redis_client)
    jobs.enqueue_at(datetime.now(UTC) - timedelta(seconds=2), "jobs.revoke.revoke_grant", "BG-AAAAAA", 1, "expired",
                    jid="due")
    first, second = scheduler(redis_client), scheduler(redis_client)
    assert first.acquire_lock()
    try:
        assert second.tick() is False
        assert jobs.access_queue.job_ids == []
    finally:
        first.remove_lock()
    assert second.tick() is True
    assert jobs.access_queue.job_ids == ["due"]
