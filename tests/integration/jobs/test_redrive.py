"""Working states have deadlines; the reconciler re-drives a step whose job a gone worker took, and the claim a
worker makes when it reads a dequeued job keeps a pushed-back copy from running it twice (in process, real Redis,
the emulators; the product clock is moved instead of waiting)."""

from __future__ import annotations

from rq.serializers import JSONSerializer

from jobs.context import install
from policies.lifecycle import State
from services.state.queue import ACCESS_QUEUE_NAME, ClaimingQueue, JobState, JSONJob, worker_queues
from services.workflow.access import Who
from tests.factories import PEOPLE
from tests.harness import BurstWorker, Product
from tests.integration.jobs.conftest import submit

RUNS: list[str] = []


def counted(tag: str) -> str:
    RUNS.append(tag)
    return tag


def take(product: Product, jid: str, queue: str = ACCESS_QUEUE_NAME) -> None:
    """What Redis does for a worker blocked in BLPOP: the id leaves the queue; the worker then never reads it."""
    assert product.runtime.redis.lrem(f"rq:queue:{queue}", 1, jid) == 1


def work(product: Product) -> None:
    """A real worker, as `breakglass worker` builds it, until the queues are empty."""
    install(product.services)
    redis = product.runtime.redis
    BurstWorker(worker_queues(redis, ClaimingQueue), connection=redis, serializer=JSONSerializer,
                 job_class=JSONJob, queue_class=ClaimingQueue).work(burst=True, with_scheduler=False,
                                                                    logging_level="WARNING")


def test_a_job_pushed_back_while_a_live_worker_reads_it_runs_once(product):
    queue = product.services.queue
    RUNS.clear()
    assert queue.enqueue(f"{__name__}.counted", "once", jid="probe")
    take(product, "probe", "breakglass")  # a live worker between its BLPOP and its read of the job
    assert queue.look(["probe"]) == {"probe": JobState.ORPHANED}
    assert queue.redrive(f"{__name__}.counted", jid="probe")  # the reconciler pushes it back meanwhile
    assert not queue.redrive(f"{__name__}.counted", jid="probe")  # once: it is in its queue again
    claimed = ClaimingQueue._fetch_dequeued_job(product.runtime.redis, "rq:queue:breakglass", "probe")
    assert claimed is not None  # the live worker goes on: its read claims the job
    assert queue.look(["probe"]) == {"probe": JobState.RUNNING}
    assert not queue.redrive(f"{__name__}.counted", jid="probe")
    job, _ = claimed
    job.perform()
    work(product)  # the pushed-back copy is popped by another worker: skipped, not run again
    assert RUNS == ["once"]
    assert product.runtime.redis.llen("rq:queue:breakglass") == 0


def test_a_revoke_taken_by_a_gone_worker_is_redriven_after_its_deadline(product):
    record = submit(product, "sam", seconds=1800)
    product.run_jobs()
    sam = PEOPLE["sam"]
    assert product.services.access.deactivate(record.id, Who(sam.object_id, sam.display_name)).changed
    revoking = product.store.get(record.id)
    jid = f"revoke_{record.id}_{revoking.grant.generation}_now"
    take(product, jid)
    reconciler = product.services.reconciler
    interval = reconciler.interval.total_seconds()
    assert reconciler.tick().redriven_jobs == []  # not due yet: its deadline is a tenth of a period away
    assert product.store.work_deadline(record.id) is not None
    product.advance(interval / 10 + 0.1)
    report = reconciler.tick()
    assert report.redriven_jobs == [jid] and report.resumed_revocations == [record.id]
    assert reconciler.tick().redriven_jobs == []  # in its queue again: nothing more until a period later
    work(product)
    ended = product.store.get(record.id)
    assert ended.state is State.REVOKED and ended.end_reason == "deactivated"
    assert product.store.work_deadline(record.id) is None  # left its working state: off the index
    [redriven] = [e for e in product.audit.for_request(record.id) if e.event == "job.redriven"]
    assert redriven.data == {"job": jid, "step": "revoke", "state": "revoking", "found": "orphaned",
                             "since": revoking.updated_at.isoformat()}
    assert product.services.grants.metrics.counters("redriven") == {"revoke": 1.0}
    assert [i for i in product.graph.instances() if i["principalId"] == sam.object_id] == []


def test_requests_in_working_states_before_the_index_existed_are_indexed_once(product):
    record = submit(product, "sam", seconds=1800)  # approved by rule; its grant job queued
    store = product.store
    store.drop_work(record.id)  # as written by a version without the index
    assert store.work_deadline(record.id) is None
    take(product, f"grant_{record.id}")
    product.advance(product.services.reconciler.interval.total_seconds())
    assert product.services.reconciler.tick().redriven_jobs == [f"grant_{record.id}"]
    assert store.index_working() == 0  # once per Redis
    work(product)
    assert store.get(record.id).state is State.ACTIVE
