"""Execution faults with real `breakglass worker` / `breakglass scheduler` processes, real Redis and the emulators:
kill -9, SIGTERM, the scheduler gone, a scheduled job deleted, Redis restarted, Graph throttling and outages,
ServiceNow down, a regrant racing the old revoke. Time scale: see conftest (BREAKGLASS_RESILIENCE_SCALE)."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import pytest

from policies.lifecycle import State
from services.workflow.access import Who
from tests.harness import Processes, Product
from tests.integration.jobs.conftest import submit, wait_for
from tests.resilience.conftest import (
    GA,
    HELPDESK,
    RECONCILE_S,
    RECONCILER_BOUND_S,
    assignments,
    audit_events,
    bulk_people,
    kill_9,
    lateness,
    logs,
    policy_file,
    reach,
    request_for,
    scaled,
    state_of,
    time_limit,
)

PIM_WRITE = "roleAssignmentScheduleRequests"
DIRECT_WRITE = "roleManagement/directory/roleAssignments"
WRITES = {"pim": PIM_WRITE, "direct": DIRECT_WRITE}


def each_grant_mode(test):
    """A slow scenario run once per grant mode (PIM schedule requests, direct role assignments)."""
    return pytest.mark.slow(time_limit(300)(pytest.mark.parametrize("mode", list(WRITES))(test)))


@each_grant_mode
def test_kill_9_after_graph_accepted_the_grant_the_retry_adopts_it(launch, mode):
    product, procs = launch(grant_mode=mode)
    write = WRITES[mode]
    # Graph does the work, then holds the answer back: the worker dies knowing nothing of it.
    product.graph.add_fault(path=write, method="POST", after=True, latency_ms=600_000, times=1)
    procs.scheduler()
    procs.worker("first")
    record = submit(product, "sam", seconds=600)
    sam = record.request.target
    wait_for(lambda: assignments(product, sam, GA), 30, f"Graph to accept the grant ({logs(procs, 'first')})")
    assert product.store.get(record.id).state is State.ACTIVATING  # the state write has not happened
    kill_9(procs, "first")
    killed = time.monotonic()
    procs.worker("second")  # the supervisor brings a worker back
    active = reach(product, record.id, State.ACTIVE, RECONCILER_BOUND_S + 10, logs(procs, "second", "scheduler"))
    took = time.monotonic() - killed
    [assignment] = assignments(product, sam, GA)  # exactly one, the one Graph accepted before the kill
    assert active.grant is not None and active.grant.adopted
    assert active.grant.assignment_id == assignment["id"]
    ledger = product.store.ledger(sam, GA, "/")
    assert ledger.holders.keys() == {record.id}
    assert (ledger.assignment_id, ledger.generation) == (assignment["id"], active.grant.generation)
    created = [h for h in product.graph.history() if h.get("event") == "created" and h.get("principalId") == sam]
    assert len(created) == 1, created
    assert len(audit_events(product, record.id, "grant.requested")) == 2  # intent before each attempt
    [activated] = audit_events(product, record.id, "grant.activated")
    assert activated.data["adopted"] is True
    assert product.audit.verify().ok
    assert took <= RECONCILER_BOUND_S, f"recovered after {took:.1f}s"


def removals(product, principal: str, role: str = GA) -> list[dict]:
    return [h for h in product.graph.history() if h.get("event") == "removed" and h.get("principalId") == principal
            and h.get("roleDefinitionId") == role]


def removal_in_flight(product) -> bool:
    """A removal Graph has received but not answered (PIM adminRemove or a direct DELETE)."""
    return any(c.duration_ms is None and (c.method == "DELETE" or (isinstance(c.body, dict)
                                                                   and c.body.get("action") == "adminRemove"))
               for c in product.graph.calls.list())


@pytest.mark.slow
@time_limit(300)
@pytest.mark.parametrize("mode,how", [("direct", "expiry"), ("pim", "deactivation")])
def test_kill_9_mid_revoke_the_assignment_is_still_removed_in_time(launch, mode, how):
    product, procs = launch(grant_mode=mode)
    procs.scheduler()
    procs.worker("first")
    record = submit(product, "sam", seconds=5 if how == "expiry" else 1800)
    sam = record.request.target
    reach(product, record.id, State.ACTIVE, 30, logs(procs, "first"))
    # The removal reaches Graph and hangs there; the worker dies mid-revoke.
    if mode == "direct":
        product.graph.add_fault(path=DIRECT_WRITE, method="DELETE", latency_ms=600_000, times=1)
    else:
        product.graph.add_fault(path=PIM_WRITE, method="POST", latency_ms=600_000, times=1)
        sam_who = Who(sam, "Sam Okafor")
        assert product.services.access.deactivate(record.id, sam_who).changed
    wait_for(lambda: removal_in_flight(product), 30, f"the revoke to call Graph ({logs(procs, 'first')})")
    assert product.store.get(record.id).state is State.REVOKING and assignments(product, sam, GA)
    kill_9(procs, "first")
    killed = time.monotonic()
    procs.worker("second")
    final = State.EXPIRED if how == "expiry" else State.REVOKED
    ended = reach(product, record.id, final, RECONCILER_BOUND_S + 10, logs(procs, "second", "scheduler"))
    took = time.monotonic() - killed
    assert assignments(product, sam, GA) == []
    assert len(removals(product, sam)) == 1
    assert ended.end_reason == ("expired" if how == "expiry" else "deactivated")
    assert took <= RECONCILER_BOUND_S, f"removed {took:.1f}s after the kill"
    assert product.store.ledger(sam, GA, "/").assignment_id is None
    assert product.audit.verify().ok


def bulk_run(launch, tmp_path, count: int) -> tuple[Product, Processes, list[Who]]:
    """A direct-mode installation (breakglass's own revocation is the only expiry; in PIM mode Entra would end the
    assignments by itself) with `count` bulk responders, a scheduler and two workers."""
    run = launch(policy_file=policy_file(tmp_path, bulk=("helpdesk-admin",)), grant_mode="direct")
    people = bulk_people(run.product, count)
    run.procs.scheduler()
    run.procs.worker("a")
    run.procs.worker("b")
    return run.product, run.procs, people


@pytest.mark.slow
@time_limit(900)
def test_scheduler_down_while_50_revocations_come_due(launch, tmp_path):
    downtime = scaled(300)
    product, procs, people = bulk_run(launch, tmp_path, 50)
    setup = 10.0  # time to activate all 50 and stop the scheduler before the first one ends
    records = [request_for(product, who, seconds=setup + i * 0.5 * downtime / len(people))
               for i, who in enumerate(people)]
    for record in records:
        reach(product, record.id, State.ACTIVE, 60, logs(procs, "a", "b"))
    procs.stop("scheduler")  # SIGTERM: the scheduler is down from here
    stopped = time.monotonic()
    back = product.clock.now() + timedelta(seconds=downtime)
    due_while_down = [r.id for r in (product.store.get(x.id) for x in records) if r.grant.ends_at <= back]
    wait_for(lambda: all(product.store.get(r).state is State.EXPIRED for r in due_while_down),
             downtime + 10, f"revocations while the scheduler is down ({logs(procs, 'a', 'b')})", interval=0.2)
    time.sleep(max(0.0, stopped + downtime - time.monotonic()))
    procs.scheduler("scheduler-again")
    for record in records:
        reach(product, record.id, State.EXPIRED, downtime + 20, logs(procs, "a", "b", "scheduler-again"))
    late = {r.id: lateness(product, r.id) for r in records}
    assert max(late.values()) <= downtime + scaled(10), late
    # The scheduler never came back for these: the reconciler removed each within its bound.
    assert max(late[r] for r in due_while_down) <= RECONCILER_BOUND_S, late
    assert len(due_while_down) >= 40
    for who in people:
        assert assignments(product, who.object_id) == []
        assert len(removals(product, who.object_id, HELPDESK)) == 1
    for record in records:
        assert len(audit_events(product, record.id, "grant.expired")) == 1
    assert any(audit_events(product, r, "reconciler.alert") for r in due_while_down)
    assert product.audit.verify().ok


@pytest.mark.slow
@time_limit(600)
def test_a_deleted_scheduled_revoke_is_recreated_and_fires_on_time(launch):
    product, procs = launch()
    procs.scheduler()
    procs.worker()
    records = {"cancelled": submit(product, "sam", seconds=scaled(90)),
               "job hash deleted": submit(product, "riley", seconds=scaled(90))}
    for record in records.values():
        active = reach(product, record.id, State.ACTIVE, 30, logs(procs, "worker"))
        jid = f"revoke_{record.id}_{active.grant.generation}"
        assert product.services.queue.scheduled_at(jid) is not None
        if record is records["cancelled"]:
            product.services.queue.cancel(jid)  # gone from the schedule and from Redis
        else:
            product.runtime.redis.delete(f"rq:job:{jid}")  # the job body vanished; the schedule entry remains
    for how, record in records.items():
        ended = reach(product, record.id, State.EXPIRED, scaled(90) + 15, logs(procs, "worker", "scheduler"))
        assert assignments(product, ended.request.target) == [], how
        assert lateness(product, record.id) <= 2.0, how  # on time: rq-scheduler's 1 s resolution
        alerts = audit_events(product, record.id, "reconciler.alert")
        assert alerts and "missing" in alerts[0].data["title"], (how, alerts)
        assert f"revoke_{record.id}_" in alerts[0].data["detail"]  # the alert names the lost job
    channel = "\n".join(str(a["current"]) for a in product.connector.all_activities()
                        if a["conversationId"].startswith("19:"))
    for record in records.values():
        assert "Scheduled revocation was missing" in channel and record.id in channel


@pytest.mark.slow
@time_limit(600)
def test_redis_restart_with_1000_scheduled_revocations(launch, own_redis, tmp_path):
    """1,000 grants whose revocations are all scheduled when Redis (AOF) restarts; every one still happens."""
    # Submitted before any worker runs; `setup` is the time the workers then get to activate all of them (about
    # 12 s on an idle 2-core machine, over 30 s while the suite's other processes share the cores) before the first
    # revocation falls due. Every grant lasts `setup`, so the revocations fall due spread out as the activations were.
    count, setup = 1000, 60.0
    product, procs = launch(client=own_redis.client(), url=own_redis.url(),
                            policy_file=policy_file(tmp_path, bulk=("helpdesk-admin",)), grant_mode="direct",
                            graph_write_rate=400.0, teams_approvals_channel_id=None)
    people = bulk_people(product, count)
    records = [request_for(product, who, seconds=setup) for who in people]
    procs.scheduler()
    procs.worker("a", "--no-fork")
    procs.worker("b", "--no-fork")
    store = product.store
    started = time.monotonic()
    wait_for(lambda: store.count_in_state(State.ACTIVE) == count, setup,
             f"{count} activations ({logs(procs, 'a', 'b')})", interval=0.5)
    # The removals are as much work as the activations were: whatever this machine needed beyond an idle one's
    # 12 s for those (other tests' processes on the same cores) it may need again for these.
    slower_than_idle = max(0.0, time.monotonic() - started - 12.0)
    first_end = min(store.get(r.id).grant.ends_at for r in records)
    revokes = [j.decode() for j in product.runtime.redis.zrange("rq:scheduler:scheduled_jobs", 0, -1)
               if j.startswith(b"revoke_")]
    assert len(revokes) == count
    took = own_redis.restart()
    assert product.clock.now() < first_end, "the restart must happen before the first revocation is due"
    wait_for(lambda: store.count_in_state(State.EXPIRED) == count, 2 * setup + RECONCILER_BOUND_S,
             f"{count} revocations ({logs(procs, 'a', 'scheduler')})", interval=0.5)
    for name in ("scheduler", "a", "b"):  # nobody had to restart them
        assert procs.procs[name].poll() is None, f"{name} died with Redis ({logs(procs, name)})"
    held = {i["principalId"] for i in product.graph.instances()}
    assert not held & {who.object_id for who in people}
    removed = [h for h in product.graph.history() if h.get("event") == "removed"]
    assert len(removed) == count and len({h["principalId"] for h in removed}) == count
    ended = {e.request_id: e.data["late_seconds"] for e in product.audit.events() if e.event == "grant.expired"}
    assert ended.keys() == {r.id for r in records}
    assert max(ended.values()) <= took + RECONCILER_BOUND_S + slower_than_idle, (slower_than_idle,
                                                                                 sorted(ended.values())[-10:])
    assert product.audit.verify().ok


def write_calls(product) -> list:
    """Every Graph write (direct mode: POST creates, DELETE removes), oldest first."""
    return [c for c in product.graph.calls.list(path=DIRECT_WRITE) if c.method in {"POST", "DELETE"}]


def operation(call) -> tuple[str, str]:
    """Which logical write a call belongs to: the principal's create, or the removal of one assignment."""
    return (call.method, call.body["principalId"] if call.method == "POST" else call.path)


@pytest.mark.slow
@time_limit(900)
def test_graph_429_storm_every_grant_and_revoke_completes_and_retry_after_is_honoured(launch, tmp_path):
    storm = scaled(120)
    product, procs, people = bulk_run(launch, tmp_path, 12)
    # 50 % of writes answer 429 with Retry-After 1..10 s (scaled), each rule twice: the storm ends by count, not on
    # a timer that a loaded machine could outlast before its first write (at most 20 throttled creates and 20
    # throttled removals for 12 of each).
    retry_after: dict[str, float] = {}
    for k in range(10):
        wait = scaled(k + 1)
        for method in ("POST", "DELETE"):
            rule = product.graph.add_fault(path=DIRECT_WRITE, method=method, status=429, times=2,
                                           probability=0.05 / (1 - 0.05 * k), headers={"Retry-After": f"{wait:g}"},
                                           fixture="graph/error_429_too_many_requests_doc.http.json")
            retry_after[rule.id] = wait
    records = [request_for(product, who, seconds=2 + i * storm / 2 / len(people)) for i, who in enumerate(people)]
    for record in records:  # every grant and every revoke completes
        reach(product, record.id, State.EXPIRED, storm + 60, logs(procs, "a", "b"))
    calls = write_calls(product)
    throttled = [c for c in calls if c.status == 429]
    assert len(throttled) >= 5 and any(c.method == "DELETE" for c in throttled)
    by_operation: dict[tuple[str, str], list] = {}
    for call in calls:
        by_operation.setdefault(operation(call), []).append(call)
    for key, attempts in by_operation.items():
        for before, after in itertools.pairwise(attempts):
            if before.status == 429:  # no request before its Retry-After
                assert after.time - before.time >= retry_after[before.fault] - 0.01, (key, before, after)
    for who in people:  # no duplicate assignment, and none left behind
        created = [h for h in product.graph.history() if h.get("event") == "created"
                   and h.get("principalId") == who.object_id]
        assert len(created) == 1, created
        assert assignments(product, who.object_id) == []
    assert product.audit.verify().ok


@each_grant_mode
def test_graph_responses_lost_after_the_work_was_done_never_duplicate_an_assignment(launch, mode):
    product, procs = launch(grant_mode=mode)
    write = WRITES[mode]
    # Graph creates the assignment but the connection is reset before the answer; then a 503 for good measure.
    product.graph.add_fault(path=write, method="POST", after=True, drop=True, times=2)
    product.graph.add_fault(path=write, method="POST", status=503, times=1)
    procs.scheduler()
    procs.worker()
    record = submit(product, "sam", seconds=600)
    active = reach(product, record.id, State.ACTIVE, 30, logs(procs, "worker"))
    [assignment] = assignments(product, record.request.target, GA)
    assert active.grant.assignment_id == assignment["id"] and active.grant.adopted
    created = [h for h in product.graph.history() if h.get("event") == "created"]
    assert len(created) == 1
    assert product.graph.calls.count(path=write, method="POST") >= 3


@pytest.mark.slow
@time_limit(2400)
def test_graph_down_bounded_backoff_then_alert_and_no_assignment_left_behind(launch):
    product, procs = launch(grant_mode="direct")
    procs.scheduler()
    procs.worker("a")
    procs.worker("b")
    held = submit(product, "riley", seconds=3)  # granted before Graph goes down, ends while it is down
    reach(product, held.id, State.ACTIVE, 30, logs(procs, "a", "b"))
    # Graph down for writes: 503s and connection resets, no Retry-After.
    product.graph.add_fault(path=DIRECT_WRITE, method="POST", status=503, probability=0.5)
    product.graph.add_fault(path=DIRECT_WRITE, method="POST", drop=True)
    product.graph.add_fault(path=DIRECT_WRITE, method="DELETE", status=503, probability=0.5)
    product.graph.add_fault(path=DIRECT_WRITE, method="DELETE", drop=True)
    record = submit(product, "sam", seconds=600)
    failed = reach(product, record.id, State.FAILED, scaled(600) + 60, logs(procs, "a", "b"))
    assert "Graph unavailable" in failed.failure
    assert assignments(product, record.request.target) == []
    posts = [c for c in write_calls(product) if c.method == "POST" and c.body["principalId"] == record.request.target]
    assert len(posts) <= 5 * 5  # HTTP attempts per job x job attempts: bounded
    assert len(audit_events(product, record.id, "grant.requested")) == 5  # job attempts: bounded
    waits = [e.data["in_seconds"] for e in audit_events(product, record.id, "grant.retry_scheduled")]
    assert waits == [RECONCILE_S / 2 * 2 ** n for n in range(4)]  # backing off (15 s, 30 s, ... at full scale)
    wait_for(lambda: "Access grant failed" in (text := channel_text(product)) and record.id in text, 30,
             "the grant-failed alert")  # then the alert
    # The removal keeps failing: on-call hears about it, and breakglass keeps trying (bounded back-off) ...
    wait_for(lambda: "Access removal is failing" in channel_text(product), scaled(600) + 60,
             "the removal-failing alert")
    assert state_of(product, held.id) is State.REVOKING
    product.graph.faults.clear()
    # ... until Graph is back: the assignment is removed.
    reach(product, held.id, State.EXPIRED, scaled(300) + 10, logs(procs, "a", "b"))
    assert len(audit_events(product, held.id, "reconciler.alert")) <= 1  # one overdue alert, not one per tick
    assert assignments(product, held.request.target) == []


def channel_text(product) -> str:
    return "\n".join(str(a["current"]) for a in product.connector.all_activities()
                     if a["conversationId"].startswith("19:"))


@pytest.mark.slow
@time_limit(300)
def test_a_regrant_right_before_the_old_revoke_fires_keeps_the_new_grant(launch, tmp_path):
    product, procs = launch(policy_file=policy_file(tmp_path, same_role="allow"), grant_mode="direct")
    procs.scheduler()
    procs.worker("a")
    procs.worker("b")
    # Riley is granted Helpdesk Administrator again just before the first grant's revoke fires (the two share
    # the assignment); Sam gets User Administrator again while the first revoke's DELETE is already on the wire.
    shared = submit(product, "riley", entitlement="helpdesk-admin", seconds=4)
    old = submit(product, "sam", entitlement="user-admin", seconds=4)
    for record in (shared, old):
        reach(product, record.id, State.ACTIVE, 30, logs(procs, "a", "b"))
    regrant = submit(product, "riley", entitlement="helpdesk-admin", seconds=6,
                     justification="Restore the deleted accounts of the payroll team, INC0012347")
    product.graph.add_fault(path=DIRECT_WRITE, method="DELETE", latency_ms=3000, times=1)
    wait_for(lambda: removal_in_flight(product), 30, "the old revoke to call Graph")
    new = submit(product, "sam", entitlement="user-admin", seconds=5,
                 justification="Restore the deleted accounts of the payroll team, INC0012345")
    for first, second in ((shared, regrant), (old, new)):
        reach(product, first.id, State.EXPIRED, 30, logs(procs, "a", "b"))
        current = reach(product, second.id, State.ACTIVE, 30, logs(procs, "a", "b"))
        who, role = current.request.target, current.decision.role_definition_id
        time.sleep(0.5)
        assert assignments(product, who, role), "the old revoke removed the new grant"
        assert product.store.ledger(who, role, "/").assignment_id == assignments(product, who, role)[0]["id"]
    assert audit_events(product, shared.id, "grant.expired")[0].data["still_covered_by"] == [regrant.id]
    assert audit_events(product, new.id, "grant.waiting_for_removal")  # the race on the wire really happened
    for record in (regrant, new):
        ended = reach(product, record.id, State.EXPIRED, 20, logs(procs, "a", "b"))
        assert assignments(product, ended.request.target, ended.decision.role_definition_id) == []


@pytest.mark.slow
@time_limit(300)
def test_sigterm_during_a_deploy_with_jobs_in_flight_loses_nothing(launch):
    product, procs = launch(grant_mode="direct")
    product.graph.add_fault(path=DIRECT_WRITE, method="POST", latency_ms=1500, times=2)
    procs.scheduler("old-scheduler")
    procs.worker("old")
    records = [submit(product, "sam", seconds=5), submit(product, "riley", seconds=5),
               submit(product, "sam", entitlement="user-admin", seconds=5)]
    wait_for(lambda: any(c.duration_ms is None for c in write_calls(product)), 30, "a grant in flight")
    old_worker = procs.procs["old"]
    old_worker.terminate()  # SIGTERM, as a deploy does ...
    procs.stop("old-scheduler")
    procs.worker("new")  # ... while the new release starts
    procs.scheduler("new-scheduler")
    assert old_worker.wait(timeout=30) == 0  # warm shutdown: it finished the job in hand and left
    for record in records:
        reach(product, record.id, State.ACTIVE, 30, logs(procs, "new", "old"))
    for record in records:
        reach(product, record.id, State.EXPIRED, 30, logs(procs, "new", "new-scheduler"))
        assert assignments(product, record.request.target, record.decision.role_definition_id) == []
    created = [h for h in product.graph.history() if h.get("event") == "created"]
    assert len(created) == len(records)  # nothing lost, nothing doubled
    assert product.audit.verify().ok


def notes_about(product, number: str, request_id: str) -> list[str]:
    return [n for n in product.servicenow.work_notes(number) if request_id in n]


def graph_writes_for(product, principal: str) -> list:
    return [c for c in product.graph.calls.list(path=PIM_WRITE, method="POST")
            if isinstance(c.body, dict) and c.body.get("principalId") == principal]


@pytest.mark.slow
@time_limit(2400)
def test_servicenow_down_for_10_minutes(launch, own_redis):
    """Three installations share the emulators and one ServiceNow outage: receipts policy "proceed" (grants now,
    receipts after), "wait" (holds the grant until ServiceNow answers) and one whose receipt retries run out during
    the outage (child incident once ServiceNow is back)."""
    outage = scaled(600)
    proceed = launch(name="proceed", client=own_redis.client(0), url=own_redis.url(0))
    stack = proceed.product
    wait = launch(name="wait", stack=stack, client=own_redis.client(1), url=own_redis.url(1),
                  receipts_policy="wait")
    child = launch(name="child", stack=stack, client=own_redis.client(2), url=own_redis.url(2),
                   receipt_max_attempts=3)
    # Requested and decided while ServiceNow still answered (the tickets are verified) ...
    granted = submit(proceed.product, "sam", seconds=1800)
    held = submit(wait.product, "riley", seconds=1800)
    owed = submit(child.product, "sam", entitlement="user-admin", seconds=1800)
    # ... then ServiceNow goes down: resets and 503s on every call.
    stack.servicenow.add_fault(path=".", drop=True, probability=0.5, duration_s=outage)
    stack.servicenow.add_fault(path=".", status=503, duration_s=outage)
    down = time.monotonic()
    for run in (wait, child):
        run.procs.scheduler()
        run.procs.worker()
    reach(child.product, owed.id, State.ACTIVE, 30, logs(child.procs, "worker"))  # grants proceed
    time.sleep(max(0.0, down + outage / 3 - time.monotonic()))
    proceed.procs.scheduler()
    proceed.procs.worker()  # a grant made a third into the outage
    active = reach(proceed.product, granted.id, State.ACTIVE, 30, logs(proceed.procs, "worker"))
    assert time.monotonic() < down + outage
    # "wait": nothing granted while ServiceNow is down.
    assert state_of(wait.product, held.id) is State.ACTIVATING
    assert audit_events(wait.product, held.id, "grant.waiting_for_itsm")
    assert graph_writes_for(stack, held.request.target) == []
    assert notes_about(stack, "INC0012345", granted.id) == []
    wait_for(lambda: audit_events(child.product, owed.id, "itsm.child_incident_failed"), scaled(300),
             "the retries to run out during the outage")
    # ServiceNow is back.
    wait_for(lambda: not stack.servicenow.faults.active(), outage + 5, "the end of the outage")
    back = time.monotonic()
    reach(wait.product, held.id, State.ACTIVE, RECONCILE_S + 10, logs(wait.procs, "worker"))
    assert time.monotonic() - back <= RECONCILE_S + 10  # within one poll of the ticketing system (30 s at 1x)
    wait_for(lambda: notes_about(stack, "INC0012347", held.id), 30, "the held grant's receipt")
    # "proceed": the receipt delivered after the outage, on the parent ticket, with the evidence.
    notes = wait_for(lambda: notes_about(stack, "INC0012345", granted.id), scaled(900),
                     f"the receipt after the outage ({logs(proceed.procs, 'worker')})")
    assert "Global Administrator granted" in notes[0]
    wait_for(lambda: any(granted.id in a["file_name"] for a in stack.servicenow.attachments()), 30,
             "the evidence attached after the outage")
    assert audit_events(proceed.product, granted.id, "receipt.failed")
    assert audit_events(proceed.product, granted.id, "itsm.child_incident_opened") == []
    assert active.grant is not None
    # Retries ran out for the third: a child incident once ServiceNow answers again, and one alert.
    opened = wait_for(lambda: audit_events(child.product, owed.id, "itsm.child_incident_opened"), scaled(120),
                      "the child incident after the outage")
    number = opened[0].data["number"]
    incidents = {i["number"]: i for i in stack.servicenow.state()["incidents"]}
    parent = incidents[number].get("parent_incident")
    assert owed.id in incidents[number]["short_description"]
    assert (parent.get("value") if isinstance(parent, dict) else parent) == incidents["INC0012345"]["sys_id"]
    alerts = [e for e in child.product.audit.events() if e.event == "alert.raised"
              and e.data["title"] == "Receipt could not be delivered"]
    assert len(alerts) == 1


def test_receipt_retries_outlive_a_10_minute_outage_that_starts_with_the_grant(tmp_path, redis_client, redis_url):
    """In process, on the product clock, with the shipped receipt settings: the retries span the documented
    ~15 minutes, so a 10-minute ServiceNow outage that begins with the grant still ends in a receipt (it used to
    give up after 7.7 minutes, while ServiceNow was still down)."""
    from tests.harness import start_product

    product = start_product(tmp_path, redis_client, redis_url, http_max_attempts=1)
    try:
        record = submit(product, "sam", seconds=3600)
        outage = product.servicenow.add_fault(path=".", status=503)
        product.run_jobs()
        assert state_of(product, record.id) is State.ACTIVE
        for _ in range(60):
            product.advance(10)
            product.run_jobs()
        product.servicenow.faults.remove(outage.id)
        for _ in range(60):
            if notes_about(product, "INC0012345", record.id):
                break
            product.advance(10)
            product.run_jobs()
        assert notes_about(product, "INC0012345", record.id)
        assert audit_events(product, record.id, "itsm.child_incident_opened") == []
        assert len(audit_events(product, record.id, "receipt.failed")) == 6
    finally:
        product.stop()


def test_recovery_timings_follow_the_reconciler_period_and_keep_their_defaults(redis_client):
    """One setting paces the safety net (what lets this suite run it 10x faster); the shipped values are unchanged:
    5 s heartbeats, a job abandoned after 20 s, a request stuck after 30 s, job retries from 15 s, and HTTP
    back-off from 0.5 s up to 10 s within the 60 s budget."""
    from datetime import UTC, datetime

    from services.clients.http import RetryPolicy
    from services.composition import Runtime, Services
    from services.settings import Settings
    from services.state.queue import JobQueue, abandoned_after_s, heartbeat_interval_s

    assert (heartbeat_interval_s(30), abandoned_after_s(30)) == (5, 20)
    assert (heartbeat_interval_s(3), abandoned_after_s(3)) == (1, 3)  # never fewer than three missed heartbeats
    for interval, budget in ((30, 60.0), (3, 6.0)):
        settings = Settings(_env_file=None, env="development", reconcile_interval_s=interval,  # type: ignore[call-arg]
                            http_retry_budget_s=budget, entra_tenant_id="t", entra_client_id="c",
                            entra_client_secret="s")
        services = Services(Runtime(settings, client=redis_client))
        assert services.reconciler.interval.total_seconds() == interval
        assert services.grants.retry_base.total_seconds() == interval / 2
        assert services.queue.abandoned_after_s == abandoned_after_s(interval)
        policy = RetryPolicy.from_settings(settings)
        assert (policy.backoff_base_s, policy.backoff_max_s) == (budget / 120, budget / 6)
    # A job is never scheduled before its time: rq-scheduler's whole seconds are rounded up.
    queue = JobQueue(redis_client)
    when = datetime.now(UTC).replace(microsecond=200_000)
    queue.enqueue_at(when, "jobs.reconcile.reconcile", jid="probe")
    assert queue.scheduled_at("probe") >= when
