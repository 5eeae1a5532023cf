"""End to end with real `breakglass worker` and `breakglass scheduler` processes: grant, receipts, expiry on
time, and the reconciler taking over when the scheduler is down."""

from __future__ import annotations

import pytest

from policies.lifecycle import State
from tests.harness import Product, start_product
from tests.integration.jobs.conftest import submit, wait_for

GA = "62e90394-69f5-4237-9190-012177145e10"


def graph_has(product: Product, principal: str) -> bool:
    """Any active assignment (PIM or direct) of the principal in the Graph emulator."""
    return any(i["principalId"] == principal for i in product.graph.instances())


def lateness(product: Product, request_id: str) -> float:
    event = next(e for e in product.audit.for_request(request_id) if e.event in {"grant.expired", "grant.revoked"})
    return float(event.data["late_seconds"])


@pytest.mark.parametrize("mode", ["pim", "direct"])
def test_grant_receipts_and_expiry_on_time(tmp_path, redis_client, redis_url, mode):
    from tests.harness import Processes

    product = start_product(tmp_path, redis_client, redis_url, grant_mode=mode, receipt_backoff_s=0.2)
    procs = Processes(product.settings, tmp_path)
    try:
        procs.worker()
        procs.scheduler()
        record = submit(product, "sam", seconds=8)
        assert record.state is State.APPROVED
        active = wait_for(lambda: (r := product.store.get(record.id)).state is State.ACTIVE and r, 20,
                          f"activation ({procs.log('worker')[-2000:]})")
        assert active.grant.mode.value == mode
        if mode == "pim":
            assert graph_has(product, active.request.target)
            posts = product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST")
            assert [c.body["action"] for c in posts] == ["adminAssign"]
            assert posts[0].body["scheduleInfo"]["expiration"] == {"type": "afterDuration", "duration": "PT8S"}
        else:
            assert product.graph.calls.list(path="roleManagement/directory/roleAssignments", method="POST")
        notes = wait_for(lambda: [n for n in product.servicenow.work_notes("INC0012345") if "granted" in n], 15,
                         "the grant receipt on the ticket")
        assert "Global Administrator granted to Sam Okafor" in notes[0]
        names = wait_for(lambda: len(product.servicenow.attachments()) == 2
                         and sorted(a["file_name"] for a in product.servicenow.attachments()), 10,
                         "both evidence attachments")
        assert names == [f"breakglass-{record.id}-activated.json", f"breakglass-{record.id}-activated.md"]
        wait_for(lambda: any(record.id in str(a) for a in product.connector.all_activities()
                             if a["conversationId"].startswith("19:")), 10, "the channel receipt")
        ended = wait_for(lambda: (r := product.store.get(record.id)).state is State.EXPIRED and r, 20,
                         f"expiry ({procs.log('scheduler')[-1500:]})")
        assert ended.end_reason == "expired"
        assert lateness(product, record.id) <= 2.0
        assert not graph_has(product, record.request.target)
        wait_for(lambda: [n for n in product.servicenow.work_notes("INC0012345") if "expired" in n], 15,
                 "the expiry note on the ticket")
        assert product.audit.verify().ok
    finally:
        procs.stop_all()
        product.stop()


def test_reconciler_revokes_on_time_when_the_scheduler_is_down(tmp_path, redis_client, redis_url):
    from tests.harness import Processes

    product = start_product(tmp_path, redis_client, redis_url, grant_mode="direct", reconcile_interval_s=2)
    procs = Processes(product.settings, tmp_path)
    try:
        procs.worker()  # no scheduler at all: the worker's watchdog must run the reconciler
        record = submit(product, "sam", seconds=4)
        active = wait_for(lambda: (r := product.store.get(record.id)).state is State.ACTIVE and r, 20, "activation")
        assert graph_has(product, active.request.target)
        ended = wait_for(lambda: (r := product.store.get(record.id)).state is State.EXPIRED and r, 30,
                         f"the reconciler's revocation ({procs.log('worker')[-2000:]})")
        assert ended.state is State.EXPIRED
        assert lateness(product, record.id) <= 2 * 2 + 3  # within two reconcile intervals plus the job itself
        assert not graph_has(product, active.request.target)
        assert any(e.event == "reconciler.alert" for e in product.audit.for_request(record.id))
    finally:
        procs.stop_all()
        product.stop()


def test_worker_sigterm_finishes_or_leaves_jobs_for_the_next_worker(product, processes):
    procs = processes
    procs.worker("first")
    records = [submit(product, alias, seconds=600) for alias in ("riley", "sam")]
    procs.stop("first")  # SIGTERM: warm shutdown, whatever it was doing
    procs.worker("second")
    for record in records:
        wait_for(lambda r=record: product.store.get(r.id).state is State.ACTIVE, 20, "activation after restart")
    # Nothing lost and nothing doubled: every approved request became active exactly once.
    posts = product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST")
    assert len([c for c in posts if c.body["action"] == "adminAssign"]) == len(records)
