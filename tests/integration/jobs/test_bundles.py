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


# --- a group and a role in one bundle ----------------------------------------------------------------------------
# The bundle's role (Conditional Access Administrator, approval required) comes first and the group second, so a
# failing group is a member failing after another succeeded.

MIXED = "mailbox-responder"
CA_ADMIN = "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9"
ROLE_WRITES = {"pim": "roleAssignmentScheduleRequests", "direct": "roleManagement/directory/roleAssignments"}


def mixed_policy(directory, same_role: str = "deny"):
    from tests.integration.jobs.test_groups import group_policy

    path = group_policy(directory, same_role=same_role)
    text = path.read_text()
    assert "\nbundles:\n" in text
    path.write_text(text.replace("\nbundles:\n", f"""
bundles:
  {MIXED}:
    display_name: Mailbox responder
    entitlements: [conditional-access-admin, exchange-admins]
  exchange-full:
    entitlements: [exchange-admins, exchange-owners]
""", 1))
    return path


def start_mixed(tmp_path, redis_client, redis_url, mode: str, same_role: str = "deny") -> Product:
    return start_product(tmp_path, redis_client, redis_url, grant_mode=mode, receipt_backoff_s=0.2,
                         policy_file=mixed_policy(tmp_path, same_role))


@pytest.fixture(params=["pim", "direct"])
def mixed(request, tmp_path, redis_client, redis_url):
    product = start_mixed(tmp_path, redis_client, redis_url, request.param)
    yield request.param, product
    product.stop()


def in_group(product: Product) -> bool:
    from tests.integration.jobs.test_groups import EXCHANGE

    return RILEY.object_id in product.graph.state()["memberships"].get(EXCHANGE, [])


def group_instances_of(product: Product) -> list[dict]:
    from tests.integration.jobs.test_groups import EXCHANGE

    return [i for i in product.graph.state()["group_instances"]
            if i["groupId"] == EXCHANGE and i["principalId"] == RILEY.object_id]


def approved_mixed(product: Product, seconds: int = 600):
    record = submit(product, "riley", entitlement=MIXED, justification=JUST, seconds=seconds)
    assert record.state is State.PENDING_APPROVAL and record.decision.is_bundle
    assert [m.entitlement for m in record.decision.members] == ["conditional-access-admin", "exchange-admins"]
    product.run_jobs()
    result = product.services.access.vote(record.id, DANA, Verdict.APPROVE, terms=record.terms_digest)
    assert result.changed and result.record.state is State.APPROVED
    return record


def test_a_group_and_a_role_in_one_bundle_are_granted_each_audited_one_receipt_and_end_together(mixed):
    from tests.integration.jobs.test_groups import EXCHANGE, GROUP_REQUESTS

    mode, product = mixed
    record = approved_mixed(product)
    product.run_jobs(due=False)
    active = product.store.get(record.id)
    assert active.state is State.ACTIVE, active.failure
    assert len(active.grants) == 2 and [g.target.is_group if g.target else False for g in active.grants] == [
        False, True]
    assert {g.ends_at for g in active.grants} == {active.grant.ends_at}
    # Each member reached Graph through its own endpoint.
    assert roles_of(product) == {CA_ADMIN}
    [role_write] = product.graph.calls.list(path=ROLE_WRITES[mode], method="POST")
    assert CA_ADMIN in str(role_write.body)
    if mode == "pim":
        [assign] = product.graph.calls.list(path=GROUP_REQUESTS, method="POST")
        assert (assign.body["action"], assign.body["groupId"], assign.body["accessId"],
                assign.body["principalId"]) == ("adminAssign", EXCHANGE, "member", RILEY.object_id)
        assert len(group_instances_of(product)) == 1
    else:
        [add] = product.graph.calls.list(path=f"groups/{EXCHANGE}/members/$ref", method="POST")
        assert add.body["@odata.id"].endswith(f"/directoryObjects/{RILEY.object_id}")
        assert product.graph.calls.list(path=GROUP_REQUESTS, method="POST") == []
    assert in_group(product)
    activated = events(product, record.id, "grant.activated")
    assert [(e.data["member"], e.data["bundle"]) for e in activated] == [
        ("conditional-access-admin", MIXED), ("exchange-admins", MIXED)]
    assert [e.data["role"] for e in activated] == [CA_ADMIN, f"group:{EXCHANGE}"]
    notes = [n for n in product.servicenow.work_notes("INC0012347") if "granted to" in n]
    assert len(notes) == 1 and "Conditional Access Administrator" in notes[0] and "Exchange Admins (JIT)" in notes[0]
    # The evidence pack names each member by what it is, with its own assignment (the group's is not a role id).
    [pack] = [product.servicenow.attachment_content(a["sys_id"]).decode() for a in product.servicenow.attachments()
              if a["file_name"].endswith("-activated.md")]
    lines = [x for x in pack.splitlines() if x.startswith("- **Member:**")]
    assert lines == [
        f"- **Member:** Conditional Access Administrator (`{CA_ADMIN}`): needs_approval, assignment "
        f"`{active.grants[0].assignment_id}`",
        f"- **Member:** Exchange Admins \\(JIT\\) \\(group member\\) (`{EXCHANGE}`, member): auto_approve, assignment "
        f"`{active.grants[1].assignment_id}`"]
    assert product.services.foreign_scan.scan() == []  # both members are breakglass's own, held in the ledger
    from services.workflow.followup import FollowUps

    body = FollowUps.webhook_body(active, "notify", "after_grant")  # a runbook can tell which group it got
    assert body["members"] == [
        {"role": "Conditional Access Administrator", "role_definition_id": CA_ADMIN},
        {"role": "Exchange Admins (JIT) (group member)", "role_definition_id": "",
         "group": {"id": EXCHANGE, "access": "member"}}]

    product.advance(601)
    product.run_jobs()
    ended = product.store.get(record.id)
    assert ended.state is State.EXPIRED
    assert roles_of(product) == set() and not in_group(product) and group_instances_of(product) == []
    if mode == "pim":
        removes = [c for c in product.graph.calls.list(path=GROUP_REQUESTS, method="POST")
                   if c.body["action"] == "adminRemove"]
        assert [(c.body["groupId"], c.body["accessId"]) for c in removes] == [(EXCHANGE, "member")]
    else:
        assert len(product.graph.calls.list(path=f"groups/{EXCHANGE}/members/", method="DELETE")) == 1
    assert events(product, record.id, "grant.expired")[0].data["removed_in_graph"] is True


def test_a_group_member_failing_after_the_role_rolls_the_role_back_and_ends_failed(mixed):
    from tests.integration.jobs.test_groups import EXCHANGE, GROUP_REQUESTS

    mode, product = mixed
    group_write = GROUP_REQUESTS if mode == "pim" else f"groups/{EXCHANGE}/members/\\$ref"
    product.graph.add_fault(path=group_write, method="POST", status=403, times=1,
                            fixture="graph/error_403_authorization_request_denied.http.json")
    record = approved_mixed(product)
    product.run_jobs(due=False)
    failed = product.store.get(record.id)
    assert failed.state is State.FAILED, (failed.state, failed.failure)
    assert "Authorization_RequestDenied" in failed.failure and "Exchange Admins (JIT)" in failed.failure
    # The role was assigned first, then taken back: nothing of the bundle is left in Graph.
    writes = product.graph.calls.list(path=ROLE_WRITES[mode], method="POST")
    assert [c.body.get("action", "assign") for c in writes] == (["adminAssign", "adminRemove"] if mode == "pim"
                                                                 else ["assign"])
    assert roles_of(product) == set() and not in_group(product) and group_instances_of(product) == []
    [started] = events(product, record.id, "grant.rollback_started")
    assert (started.data["failed_member"], started.data["to_remove"]) == ("exchange-admins",
                                                                         ["conditional-access-admin"])
    rolled = events(product, record.id, "grant.rolled_back")
    assert [(e.data["member"], e.data["removed_in_graph"]) for e in rolled] == [("conditional-access-admin", True)]
    assert events(product, record.id, "grant.failed") and not events(product, record.id, "grant.activated")
    order = [e.event for e in product.audit.for_request(record.id)]
    assert order.index("grant.rollback_started") < order.index("grant.rollback_requested") \
        < order.index("grant.rolled_back") < order.index("grant.failed")
    # Neither member's ledger holds anything: a later request for either starts clean.
    from tests.integration.jobs.test_groups import EXCHANGE as GROUP

    for role, scope in ((CA_ADMIN, "/"), (f"group:{GROUP}", "member")):
        assert record.id not in product.store.ledger(RILEY.object_id, role, scope).holders
    assert any("FAILED" in n and "rolled back" in n for n in product.servicenow.work_notes("INC0012347"))


def test_one_groups_membership_and_ownership_in_one_bundle_are_two_members_each_with_its_own_assignment(mixed):
    from tests.integration.jobs.test_groups import EXCHANGE

    _mode, product = mixed
    record = submit(product, "riley", entitlement="exchange-full", justification=JUST, seconds=600)
    product.run_jobs(due=False)
    active = product.store.get(record.id)
    assert active.state is State.ACTIVE, active.failure
    state = product.graph.state()
    assert RILEY.object_id in state["memberships"][EXCHANGE] and RILEY.object_id in state["owners"][EXCHANGE]
    assert [g.target.scope for g in active.grants] == ["member", "owner"]
    assert active.grants[0].assignment_id != active.grants[1].assignment_id
    [pack] = [product.servicenow.attachment_content(a["sys_id"]).decode() for a in product.servicenow.attachments()
              if a["file_name"].endswith("-activated.md")]
    lines = [x for x in pack.splitlines() if x.startswith("- **Member:**")]
    assert [(f"`{EXCHANGE}`, {g.target.scope}" in x, f"`{g.assignment_id}`" in x)
            for x, g in zip(lines, active.grants, strict=True)] == [(True, True), (True, True)]
    product.advance(601)
    product.run_jobs()
    assert product.store.get(record.id).state is State.EXPIRED
    state = product.graph.state()
    assert RILEY.object_id not in state["memberships"].get(EXCHANGE, [])
    assert RILEY.object_id not in state["owners"].get(EXCHANGE, [])


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "shared"])
@pytest.mark.parametrize("mode", ["pim", "direct"])
def test_a_group_member_rolled_back_is_removed_unless_another_grant_still_holds_it(tmp_path, redis_client, redis_url,
                                                                                    mode, shared):
    """The bundle's first member (the group's membership) succeeds, its second (the same group's ownership) fails:
    the membership is taken back from Graph, or, when another request holds it too, left to that request."""
    from tests.integration.jobs.test_groups import EXCHANGE, GROUP_REQUESTS

    product = start_mixed(tmp_path, redis_client, redis_url, mode, same_role="allow")
    try:
        alone = None
        if shared:
            alone = submit(product, "riley", entitlement="exchange-admins", seconds=900,
                           justification="Move the finance mailboxes to the new retention policy, INC0012347")
            product.run_jobs(due=False)
            assert product.store.get(alone.id).state is State.ACTIVE
        owners_write = GROUP_REQUESTS if mode == "pim" else f"groups/{EXCHANGE}/owners/\\$ref"
        # In pim mode membership and ownership share one endpoint: the membership's own request goes through first
        # (unless it is shared, then it makes none).
        skip = 1 if mode == "pim" and not shared else 0
        product.graph.add_fault(path=owners_write, method="POST", status=403, times=1, skip=skip,
                                fixture="graph/error_403_authorization_request_denied.http.json")
        record = submit(product, "riley", entitlement="exchange-full", justification=JUST, seconds=600)
        product.run_jobs(due=False)
        failed = product.store.get(record.id)
        assert failed.state is State.FAILED and "Authorization_RequestDenied" in failed.failure
        assert "(group owner)" in failed.failure, failed.failure
        assert RILEY.object_id not in product.graph.state()["owners"].get(EXCHANGE, [])
        [rolled] = events(product, record.id, "grant.rolled_back")
        if alone is None:
            assert (rolled.data["member"], rolled.data["removed_in_graph"]) == ("exchange-admins", True)
            assert not in_group(product) and group_instances_of(product) == []
            return
        assert (rolled.data["member"], rolled.data["removed_in_graph"], rolled.data["still_covered_by"]) == (
            "exchange-admins", False, [alone.id])
        assert in_group(product), "the membership the other request holds survives the bundle's rollback"
        product.advance(901)
        product.run_jobs()
        assert product.store.get(alone.id).state is State.EXPIRED and not in_group(product)
    finally:
        product.stop()


def test_extend_and_deactivate_move_and_end_the_group_member_with_the_role(mixed):
    mode, product = mixed
    record = approved_mixed(product, seconds=1200)
    product.run_jobs(due=False)
    riley = Who(RILEY.object_id, RILEY.display_name)
    assert product.services.access.extend(record.id, riley, 10).changed
    [pending] = [r for r in product.store.by_target(RILEY.object_id) if r.request.extends == record.id]
    assert product.services.access.vote(pending.id, DANA, Verdict.APPROVE).changed
    product.run_jobs(due=False)
    extended = product.store.get(record.id)
    assert extended.grant.ends_at - extended.grant.starts_at == timedelta(minutes=30)
    assert {g.ends_at for g in extended.grants} == {extended.grant.ends_at}
    if mode == "pim":  # the group's PIM instance moves with the role's
        ends = [datetime.fromisoformat(i["endDateTime"]) for i in [*product.graph.instances(),
                                                                   *group_instances_of(product)]
                if i["principalId"] == RILEY.object_id]
        assert len(ends) == 2 and all(abs(e - extended.grant.ends_at) < timedelta(seconds=2) for e in ends)
    product.services.access.deactivate(record.id, riley)
    product.run_jobs(due=False)
    assert product.store.get(record.id).state is State.REVOKED
    assert roles_of(product) == set() and not in_group(product) and group_instances_of(product) == []
