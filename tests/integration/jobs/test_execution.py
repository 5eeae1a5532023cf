"""Grant, revoke and receipt jobs run in-process against the emulators: failures, retries, child incidents,
throttling, overlapping grants, generations, extensions and PIM's five-minute floor."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

from policies.lifecycle import State
from services.clients.graph import parse_datetime
from services.workflow.access import Who
from services.workflow.activation import revoke_job_id
from tests.factories import PEOPLE
from tests.harness import Product, start_product
from tests.integration.jobs.conftest import submit

GA = "62e90394-69f5-4237-9190-012177145e10"


def notes(product: Product, number: str) -> list[str]:
    return product.servicenow.work_notes(number)


def channel_texts(product: Product) -> str:
    return "\n".join(str(a["current"]) for a in product.connector.all_activities()
                     if a["conversationId"].startswith("19:"))


def active(product: Product, principal: str) -> list[dict]:
    return [i for i in product.graph.instances() if i["principalId"] == principal]


def test_graph_failure_marks_failed_writes_the_reason_and_alerts_without_a_receipt(product):
    product.graph.add_fault(path="roleAssignmentScheduleRequests", method="POST", status=403,
                            fixture="graph/error_403_authorization_request_denied.http.json")
    record = submit(product, "sam", seconds=600)
    product.run_jobs()
    failed = product.store.get(record.id)
    assert failed.state is State.FAILED and "Authorization_RequestDenied" in failed.failure
    ticket = notes(product, "INC0012345")
    assert any("FAILED" in n and "Authorization_RequestDenied" in n for n in ticket)
    assert not any("granted to" in n for n in ticket)
    assert "Access grant failed" in channel_texts(product)
    assert product.servicenow.attachments() == []
    assert active(product, record.request.target) == []


def test_receipt_failure_retries_then_opens_a_child_incident(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, receipt_max_attempts=3, receipt_backoff_s=0.01)
    try:
        product.servicenow.add_fault(path="/api/now/attachment/file", method="POST", status=403,
                                     fixture="servicenow/error_403_acl_update_failed.http.json")
        record = submit(product, "sam", seconds=600)
        for _ in range(6):
            product.advance(5)
            product.run_jobs()
        assert product.store.get(record.id).state is State.ACTIVE  # a receipt failure never blocks the grant
        attempts = [e for e in product.audit.for_request(record.id) if e.event == "receipt.failed"]
        assert [e.data["attempt"] for e in attempts] == [1, 2, 3]
        children = [i for i in product.servicenow.state()["incidents"]
                    if i.get("parent_incident") in {"aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001"}
                    or (isinstance(i.get("parent_incident"), dict)
                        and i["parent_incident"].get("value") == "aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001")]
        assert len(children) == 1 and "integration failure" in children[0]["short_description"]
        assert "Receipt could not be delivered" in channel_texts(product)
        # The parts that did work were delivered once and not repeated.
        assert len([n for n in notes(product, "INC0012345") if "granted" in n]) == 1
    finally:
        product.stop()


def test_graph_429_storm_is_honoured_and_every_grant_completes(product):
    product.graph.add_fault(path="roleAssignmentScheduleRequests", method="POST", status=429,
                            headers={"Retry-After": "0.4"}, probability=0.5,
                            fixture="graph/error_429_too_many_requests_doc.http.json")
    records = [submit(product, alias, seconds=600) for alias in ("sam", "riley")]
    product.run_jobs()
    assert [product.store.get(r.id).state for r in records] == [State.ACTIVE, State.ACTIVE]
    calls = product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST")
    for before, after in itertools.pairwise(calls):
        if before.status == 429:
            assert after.time - before.time >= 0.4 - 0.02
    assert len([c for c in calls if c.status == 201]) == 2


def test_early_deactivation_removes_the_assignment(product):
    record = submit(product, "sam", seconds=1800)
    product.run_jobs()
    assert active(product, record.request.target)
    sam = PEOPLE["sam"]
    result = product.services.access.deactivate(record.id, Who(sam.object_id, sam.display_name))
    assert result.changed and result.record.state is State.REVOKING
    product.run_jobs()
    done = product.store.get(record.id)
    assert done.state is State.REVOKED and done.end_reason == "deactivated"
    assert active(product, record.request.target) == []
    assert any("revoked" in n for n in notes(product, "INC0012345"))


def test_extension_moves_the_end_and_the_scheduled_revoke(product):
    record = submit(product, "sam", seconds=20 * 60)
    product.run_jobs()
    original = product.store.get(record.id)
    sam = PEOPLE["sam"]
    result = product.services.access.extend(record.id, Who(sam.object_id, sam.display_name), 15)
    assert result.code == "extending", result.message
    product.run_jobs()
    extended = product.store.get(record.id)
    assert extended.grant.ends_at == original.grant.ends_at + timedelta(minutes=15)
    jid = f"revoke_{record.id}_{extended.grant.generation}"
    moved = product.services.queue.scheduled_at(jid)
    assert moved is not None and abs((moved - extended.grant.ends_at).total_seconds()) <= 1
    instance = active(product, record.request.target)[0]
    # Entra's end is the whole second asked, whatever fraction of a second its instance started on.
    assert parse_datetime(instance["endDateTime"]) == extended.grant.ends_at
    denied = product.services.access.extend(record.id, Who(sam.object_id, sam.display_name), 60)
    assert denied.code == "denied" and "exceeds" in denied.message


def test_overlapping_grants_are_reference_counted(tmp_path, redis_client, redis_url):
    policy = tmp_path / "policy.yaml"
    policy.write_text(Path("policies/default.yaml").read_text().replace("same_role: deny", "same_role: allow"))
    product = start_product(tmp_path, redis_client, redis_url, policy_file=policy, grant_mode="direct")
    try:
        short = submit(product, "riley", seconds=60)
        long = submit(product, "riley", seconds=600,
                      justification="Restore the deleted payroll accounts after the migration, INC0012347")
        product.run_jobs()
        assert product.store.get(short.id).state is State.ACTIVE and product.store.get(long.id).state is State.ACTIVE
        assert len(product.graph.calls.list(path="roleManagement/directory/roleAssignments", method="POST")) == 1
        product.advance(61)
        product.run_jobs()
        assert product.store.get(short.id).state is State.EXPIRED
        assert active(product, short.request.target), "the longer grant still covers the role"
        product.advance(600)
        product.run_jobs()
        assert product.store.get(long.id).state is State.EXPIRED
        assert active(product, short.request.target) == []
    finally:
        product.stop()


def test_an_old_generation_revoke_does_not_touch_a_newer_grant(product):
    first = submit(product, "sam", seconds=60)
    product.run_jobs()
    old = product.store.get(first.id)
    product.advance(61)
    product.run_jobs()
    assert product.store.get(first.id).state is State.EXPIRED
    second = submit(product, "sam", seconds=600)
    product.run_jobs()
    new = product.store.get(second.id)
    assert new.state is State.ACTIVE and new.grant.generation == old.grant.generation + 1
    stale = product.services.grants.revoke(first.id, old.grant.generation, "expired")
    assert stale.detail == "nothing to revoke"
    # Even replaying the old job against the ledger directly must not remove the newer assignment.
    release = product.store.ledger_release(new.request.target, GA, "/", first.id, old.grant.generation)
    assert not release.remove_assignment
    assert active(product, new.request.target)


def test_pim_five_minute_floor_defers_an_early_removal(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, stack_config={"pim_min_active_seconds": 300})
    try:
        record = submit(product, "sam", seconds=1800)
        product.run_jobs()
        sam = PEOPLE["sam"]
        product.services.access.deactivate(record.id, Who(sam.object_id, sam.display_name))
        product.run_jobs()
        assert product.store.get(record.id).state is State.REVOKING
        deferred = [e for e in product.audit.for_request(record.id) if e.event == "grant.revoke_deferred"]
        assert deferred and "5 minutes" in deferred[0].data["reason"]
        assert active(product, record.request.target)
        product.advance(303)
        product.run_jobs()
        assert product.store.get(record.id).state is State.REVOKED
        assert active(product, record.request.target) == []
    finally:
        product.stop()


def test_a_permanent_assignment_is_never_adopted(product):
    sam = PEOPLE["sam"].object_id
    product.graph.add_assignment(sam, GA, kind="direct")
    record = submit(product, "sam", seconds=600)
    product.run_jobs()
    failed = product.store.get(record.id)
    assert failed.state is State.FAILED and "needs review" in failed.failure
    assert "Access grant failed" in channel_texts(product)
    assert len(active(product, sam)) == 1  # the permanent one is untouched


def test_reconciler_recreates_a_deleted_scheduled_revoke_and_names_it(product):
    record = submit(product, "sam", seconds=45)
    product.run_jobs(due=False)
    current = product.store.get(record.id)
    jid = f"revoke_{record.id}_{current.grant.generation}"
    product.services.queue.cancel(jid)
    assert product.services.queue.scheduled_at(jid) is None
    product.advance(10)
    report = product.services.reconciler.tick()
    assert report.rescheduled_revokes == [record.id]
    assert product.services.queue.scheduled_at(jid) is not None
    alerts = [e for e in product.audit.for_request(record.id) if e.event == "reconciler.alert"]
    assert alerts and "missing" in alerts[0].data["title"]


def test_direct_grants_start_and_end_on_whole_seconds_and_the_revoke_is_scheduled_for_the_end(
        tmp_path, redis_client, redis_url):
    # rq-scheduler fires on whole seconds: an end on one is revoked at the tick that starts it. (In PIM mode Entra
    # sets the start, and removes the assignment itself at the end.)
    product = start_product(tmp_path, redis_client, redis_url, grant_mode="direct")
    try:
        record = submit(product, "sam", seconds=600)
        product.run_jobs()
        grant = product.store.get(record.id).grant
        assert grant is not None
        assert grant.starts_at.microsecond == 0 and grant.ends_at.microsecond == 0
        assert grant.ends_at - grant.starts_at == timedelta(seconds=600)
        due = product.services.queue.scheduled_at(revoke_job_id(record.id, grant.generation))
        assert due is not None and timedelta(0) <= due - grant.ends_at < timedelta(seconds=1)
    finally:
        product.stop()


def test_a_scheduled_revoke_is_a_compact_redis_hash(tmp_path, redis_client, redis_url):
    # Every active grant keeps one scheduled revoke job in Redis until it expires. Redis stores a hash compactly
    # (listpack/ziplist, ~0.45 KB) only while every value is at most 64 bytes; RQ's compressed `data` field for
    # (request id, generation, "expired") was 68, which made each job a ~1.2 KB hashtable.
    product = start_product(tmp_path, redis_client, redis_url, grant_mode="direct")
    try:
        record = submit(product, "sam", seconds=600)
        product.run_jobs()
        grant = product.store.get(record.id).grant
        key = f"rq:job:{revoke_job_id(record.id, grant.generation)}"
        assert redis_client.hget(key, "status") == b"scheduled"
        assert redis_client.object("encoding", key) in {b"listpack", b"ziplist"}
    finally:
        product.stop()
