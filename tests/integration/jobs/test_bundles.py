"""A bundle granted, ended, extended and rolled back against the emulators: all or nothing, in pim and direct mode."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from policies.lifecycle import State
from policies.model import Verdict
from services.workflow.access import Who
from tests.factories import PEOPLE
from tests.harness import Product, start_product
from tests.integration.jobs.conftest import submit

BUNDLE = "incident-responder"
ROLES = {"b1be1c3e-b65d-4f19-8427-f6fa0d97feb9": "conditional-access-admin",
         "fe930be7-5e62-47db-91af-98c3a49a38b1": "user-admin",
         "729827e3-9c14-49f7-bb1b-9608f156bbb8": "helpdesk-admin"}
RILEY = PEOPLE["riley"]
DANA = Who(PEOPLE["dana"].object_id, "Dana Whitfield")
JUST = "Contain the token theft on the finance tenant and block the attacker's sign-ins, INC0012347"
PATHS = {"pim": "roleAssignmentScheduleRequests", "direct": "roleManagement/directory/roleAssignments$"}


@pytest.fixture(params=["pim", "direct"])
def stack(request, tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, grant_mode=request.param, receipt_backoff_s=0.2)
    yield request.param, product
    product.stop()


def roles_of(product: Product) -> set[str]:
    return {i["roleDefinitionId"] for i in product.graph.instances() if i["principalId"] == RILEY.object_id}


def approved_bundle(product: Product, seconds: int = 600):
    record = submit(product, "riley", entitlement=BUNDLE, justification=JUST, seconds=seconds)
    assert record.state is State.PENDING_APPROVAL and record.decision.is_bundle
    product.run_jobs()  # the approval card goes out
    result = product.services.access.vote(record.id, DANA, Verdict.APPROVE, terms=record.terms_digest)
    assert result.changed and result.record.state is State.APPROVED  # one click covers the bundle
    return record


def events(product: Product, request_id: str, name: str) -> list:
    return [e for e in product.audit.for_request(request_id) if e.event == name]


def test_one_click_grants_every_member_one_receipt_lists_them_and_they_end_together(stack):
    _mode, product = stack
    record = approved_bundle(product)
    product.run_jobs(due=False)
    active = product.store.get(record.id)
    assert active.state is State.ACTIVE and len(active.grants) == 3
    assert roles_of(product) == set(ROLES)
    assert {g.ends_at for g in active.grants} == {active.grant.ends_at}  # one end for every member
    activated = events(product, record.id, "grant.activated")
    assert [e.data["member"] for e in activated] == list(ROLES.values())  # each member logged on its own
    [pack] = [product.servicenow.attachment_content(a["sys_id"]).decode() for a in product.servicenow.attachments()
              if a["file_name"].endswith("-activated.md")]
    assert "**Member:** Conditional Access Administrator" in pack and "**Member:** User Administrator" in pack
    notes = [n for n in product.servicenow.work_notes("INC0012347") if "granted to" in n]
    assert len(notes) == 1 and all(name in notes[0] for name in ("Conditional Access Administrator",
                                                                  "User Administrator",
                                                                  "Helpdesk Administrator"))
    product.advance(601)
    product.run_jobs()
    ended = product.store.get(record.id)
    assert ended.state is State.EXPIRED
    assert roles_of(product) == set()
    assert events(product, record.id, "grant.expired")[0].data["removed_in_graph"] is True
    # Conditional Access Administrator is tier-0: the bundle's end revokes the holder's sessions.
    assert ended.step("sessions") is not None and ended.step("sessions").status == "done"
    # The usage report counts each role of the bundle, as each was activated.
    from services.workflow.usage import build_report

    report = build_report(product.audit.events(), product.runtime.policies.current(),
                          since=ended.created_at - timedelta(days=1), until=ended.updated_at + timedelta(days=1))
    assert {(ln.role, ln.activations) for ln in report.lines} == {(role, 1) for role in ROLES.values()}


def test_deactivate_and_extend_apply_to_every_member(stack):
    mode, product = stack
    record = approved_bundle(product, seconds=1200)
    product.run_jobs(due=False)
    riley = Who(RILEY.object_id, RILEY.display_name)
    asked = product.services.access.extend(record.id, riley, 10)
    assert asked.changed
    pending = [r for r in product.store.by_target(RILEY.object_id) if r.request.extends == record.id]
    assert pending and pending[0].state is State.PENDING_APPROVAL
    assert product.services.access.vote(pending[0].id, DANA, Verdict.APPROVE).changed
    product.run_jobs(due=False)
    extended = product.store.get(record.id)
    assert extended.grant.ends_at - extended.grant.starts_at == timedelta(minutes=30)
    assert {g.ends_at for g in extended.grants} == {extended.grant.ends_at}  # every member moved
    if mode == "pim":  # and in Entra too (Entra's read-back end lags the asked one by its processing time)
        ends = [datetime.fromisoformat(i["endDateTime"]) for i in product.graph.instances()
                if i["principalId"] == RILEY.object_id]
        assert len(ends) == 3 and all(abs(e - extended.grant.ends_at) < timedelta(seconds=2) for e in ends)
    product.services.access.deactivate(record.id, riley)
    product.run_jobs(due=False)
    assert product.store.get(record.id).state is State.REVOKED
    assert roles_of(product) == set()


def test_the_second_of_three_members_failing_rolls_the_first_back_and_ends_failed(stack):
    mode, product = stack
    product.graph.add_fault(path=PATHS[mode], method="POST", status=403, skip=1, times=1,
                            fixture="graph/error_403_authorization_request_denied.http.json")
    record = approved_bundle(product)
    product.run_jobs(due=False)
    failed = product.store.get(record.id)
    assert failed.state is State.FAILED and "Authorization_RequestDenied" in failed.failure
    assert "User Administrator" in failed.failure
    assert roles_of(product) == set()  # no partial access survives
    started = events(product, record.id, "grant.rollback_started")
    assert started and started[0].data["failed_member"] == "user-admin"
    assert started[0].data["to_remove"] == ["conditional-access-admin"]
    rolled = events(product, record.id, "grant.rolled_back")
    assert [(e.data["member"], e.data["removed_in_graph"]) for e in rolled] == [("conditional-access-admin", True)]
    assert events(product, record.id, "grant.failed") and not events(product, record.id, "grant.activated")
    order = [e.event for e in product.audit.for_request(record.id)]
    assert order.index("grant.rollback_started") < order.index("grant.rollback_requested") \
        < order.index("grant.rolled_back") < order.index("grant.failed")
    notes = product.servicenow.work_notes("INC0012347")
    assert any("FAILED" in n and "rolled back" in n for n in notes)
    channel = "\n".join(str(a["current"]) for a in product.connector.all_activities()
                        if a["conversationId"].startswith("19:"))
    assert "Access grant failed" in channel
    # The third member was never asked for.
    assert all("729827e3" not in str(c) for c in product.graph.calls.list(path=PATHS[mode], method="POST"))


def test_pim_five_minute_floor_keeps_the_rollback_going_until_nothing_is_left(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, stack_config={"pim_min_active_seconds": 300},
                            pim_min_active_s=300)
    try:
        product.graph.add_fault(path=PATHS["pim"], method="POST", status=403, skip=1, times=1,
                                fixture="graph/error_403_authorization_request_denied.http.json")
        record = approved_bundle(product)
        product.run_jobs(due=False)
        rolling = product.store.get(record.id)
        # PIM refuses the removal for five minutes: the request is not called FAILED while access remains.
        assert rolling.state is State.ACTIVATING and "rolled back" in rolling.failure
        assert events(product, record.id, "grant.rollback_retry")
        assert roles_of(product) == {"b1be1c3e-b65d-4f19-8427-f6fa0d97feb9"}
        product.advance(303)
        product.run_jobs()
        assert product.store.get(record.id).state is State.FAILED
        assert roles_of(product) == set()
    finally:
        product.stop()


def test_a_hostile_graph_error_in_a_rolled_back_bundle_reaches_the_ticket_and_the_alert_inert(product):
    from tests.resilience.test_hostile_text import CODE_TAG, HOSTILE_GRAPH, inert

    product.graph.add_fault(path=PATHS["pim"], method="POST", status=403, skip=2, times=1,
                            body={"error": {"code": "Authorization_RequestDenied", "message": HOSTILE_GRAPH}})
    record = approved_bundle(product)
    product.run_jobs(due=False)
    failed = product.store.get(record.id)
    assert failed.state is State.FAILED and "Helpdesk Administrator" in failed.failure
    assert roles_of(product) == set()  # the third failed: the first two were rolled back
    rolled = [e.data["member"] for e in events(product, record.id, "grant.rolled_back")]
    assert rolled == ["conditional-access-admin", "user-admin"]
    [note] = [n for n in product.servicenow.work_notes("INC0012347") if "FAILED" in n]
    inert("the ticket note", note)
    assert not CODE_TAG.search(note)
    for activity in product.connector.all_activities():
        inert("a Teams message", str(activity.get("current", {}).get("summary") or ""))


def test_the_reconciler_finishes_a_rollback_whose_job_was_lost(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, stack_config={"pim_min_active_seconds": 300},
                            pim_min_active_s=300)
    try:
        product.graph.add_fault(path=PATHS["pim"], method="POST", status=403, skip=1, times=1,
                                fixture="graph/error_403_authorization_request_denied.http.json")
        record = approved_bundle(product)
        product.run_jobs(due=False)
        assert product.store.get(record.id).state is State.ACTIVATING
        queue = product.services.queue
        for n in range(2, 4):
            queue.cancel(f"grant_{record.id}_{n}")  # the deferred rollback is lost
        product.advance(303)
        product.services.reconciler.tick()
        product.run_jobs()
        assert product.store.get(record.id).state is State.FAILED
        assert roles_of(product) == set()
        assert events(product, record.id, "grant.rolled_back")[0].data["removed_in_graph"] is True
    finally:
        product.stop()
