"""Group entitlements against the Graph emulator: PIM for Groups (adminAssign with an expiration, adminRemove,
read back through assignmentScheduleInstances) and direct membership (members/$ref, DELETE …/$ref), the ledger
counting overlapping grants of one group, the reconciler ending an expired membership, the foreign-membership
scan, and a group that PIM does not manage failing clearly."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from policies.lifecycle import State
from services.emulators.seed import JIT_GROUPS
from tests.harness import Product, start_product
from tests.integration.jobs.conftest import submit

EXCHANGE = JIT_GROUPS[0][0]
SHAREPOINT = JIT_GROUPS[1][0]  # not onboarded to PIM for Groups
GROUP_REQUESTS = "identityGovernance/privilegedAccess/group/assignmentScheduleRequests"
MEMBERS_REF = f"groups/{EXCHANGE}/members/$ref"

GROUP_ENTITLEMENTS = f"""
  - id: exchange-admins
    kind: group
    display_name: Exchange Admins (JIT)
    group_id: {EXCHANGE}
    access: member
    max_duration: 4h
    approval: none
    eligible: [it-admins, identity-oncall]

  - id: exchange-owners
    kind: group
    display_name: Exchange Admins (JIT)
    group_id: {EXCHANGE}
    access: owner
    max_duration: 1h
    approval: none
    eligible: [it-admins, identity-oncall]

  - id: sharepoint-admins
    kind: group
    display_name: SharePoint Admins (JIT)
    group_id: {SHAREPOINT}
    access: member
    max_duration: 4h
    approval: none
    eligible: [it-admins, identity-oncall]
"""


def group_policy(directory: Path, *, same_role: str = "deny", on_end: bool = False) -> Path:
    text = Path("policies/default.yaml").read_text()
    marker = "\n# Bundles: several entitlements"
    assert marker in text
    entitlements = GROUP_ENTITLEMENTS
    if on_end:  # the group's holder loses their sessions at the end, and the runbook step runs after the grant
        entitlements = entitlements.replace(
            "    access: member\n    max_duration: 4h\n",
            "    access: member\n    max_duration: 4h\n    on_end: [revoke_sessions]\n", 1)
    text = text.replace(marker, entitlements + marker, 1).replace("same_role: deny", f"same_role: {same_role}")
    path = directory / "policy.yaml"
    path.write_text(text)
    return path


@pytest.fixture(params=["pim", "direct"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(tmp_path, redis_client, redis_url, mode: str, **overrides) -> Product:
    return start_product(tmp_path, redis_client, redis_url, policy_file=group_policy(tmp_path, **overrides),
                         grant_mode=mode)


def members(product: Product, access: str = "member") -> list[str]:
    state = product.graph.state()
    table = state["memberships"] if access == "member" else state["owners"]
    return list(table.get(EXCHANGE, []))


def group_instances(product: Product) -> list[dict]:
    return [i for i in product.graph.state()["group_instances"] if i["groupId"] == EXCHANGE]


def test_group_pim_assigns_with_an_expiration_reads_back_and_removes_at_the_end(tmp_path, redis_client, redis_url):
    product = start(tmp_path, redis_client, redis_url, "pim")
    try:
        record = submit(product, "sam", seconds=600, entitlement="exchange-admins")
        product.run_jobs()
        active = product.store.get(record.id)
        assert active.state is State.ACTIVE
        [assign] = product.graph.calls.list(path=GROUP_REQUESTS, method="POST")
        assert (assign.body["action"], assign.body["groupId"], assign.body["accessId"],
                assign.body["principalId"]) == ("adminAssign", EXCHANGE, "member", record.request.target)
        assert assign.body["scheduleInfo"]["expiration"] == {"type": "afterDuration", "duration": "PT10M"}
        assert assign.body["ticketInfo"]["ticketNumber"] == "INC0012345"
        # Read back through assignmentScheduleInstances, filtered on the group and the principal (required).
        reads = product.graph.calls.list(path="privilegedAccess/group/assignmentScheduleInstances", method="GET")
        assert reads and all("groupId" in str(c.query) for c in reads)
        [instance] = group_instances(product)
        assert active.grant.assignment_id == instance["id"] and active.grant.target.is_group
        assert active.grant.role_definition_id == "" and record.request.target in members(product)
        requested = next(e for e in product.audit.for_request(record.id) if e.event == "grant.requested")
        assert (requested.data["kind"], requested.data["group"], requested.data["access"]) == (
            "group", EXCHANGE, "member")

        product.advance(600)
        product.run_jobs()
        assert product.store.get(record.id).state is State.EXPIRED
        removes = [c for c in product.graph.calls.list(path=GROUP_REQUESTS, method="POST")
                   if c.body["action"] == "adminRemove"]
        assert [(c.body["groupId"], c.body["accessId"]) for c in removes] == [(EXCHANGE, "member")]
        assert group_instances(product) == [] and record.request.target not in members(product)
        notes = product.servicenow.work_notes("INC0012345")
        assert any("Exchange Admins (JIT) (group member) granted to" in n for n in notes)
        assert any("Exchange Admins (JIT) (group member)" in n and "expired" in n for n in notes)
    finally:
        product.stop()


def test_a_group_grant_is_extended_its_sessions_end_with_it_and_the_evidence_pack_names_it(tmp_path, redis_client,
                                                                                            redis_url):
    from services.workflow.access import Who
    from tests.factories import PEOPLE
    from tests.integration.jobs.test_followup import attachments, revoked_users, settle

    product = start(tmp_path, redis_client, redis_url, "pim", on_end=True)
    try:
        record = submit(product, "sam", seconds=20 * 60, entitlement="exchange-admins")
        settle(product)
        original = product.store.get(record.id)
        assert original.state is State.ACTIVE
        sam = PEOPLE["sam"]
        assert product.services.access.extend(record.id, Who(sam.object_id, sam.display_name), 15).code == "extending"
        settle(product)
        extended = product.store.get(record.id)
        assert extended.grant.ends_at == original.grant.ends_at + timedelta(minutes=15)
        [update] = [c for c in product.graph.calls.list(path=GROUP_REQUESTS, method="POST")
                    if c.body["action"] == "adminUpdate"]
        assert (update.body["groupId"], update.body["accessId"]) == (EXCHANGE, "member")
        [instance] = group_instances(product)
        entra_end = datetime.fromisoformat(instance["endDateTime"])
        assert abs((entra_end - extended.grant.ends_at).total_seconds()) < 1  # adminUpdate asks whole seconds
        assert revoked_users(product) == []
        settle(product, 35 * 60)
        assert product.store.get(record.id).state is State.EXPIRED
        assert revoked_users(product) == [record.request.target]
        pack = next(v for k, v in attachments(product).items() if k.endswith("-ended.md"))
        [line] = [x for x in pack.splitlines() if x.startswith("- **Group:**")]
        assert "Exchange Admins" in line and f"(`{EXCHANGE}`, member)" in line
    finally:
        product.stop()


def test_group_direct_adds_the_member_by_ref_and_deletes_the_ref_when_deactivated(tmp_path, redis_client,
                                                                                 redis_url):
    product = start(tmp_path, redis_client, redis_url, "direct")
    try:
        record = submit(product, "sam", seconds=600, entitlement="exchange-owners")
        product.run_jobs()
        active = product.store.get(record.id)
        assert active.state is State.ACTIVE, active.failure
        [add] = product.graph.calls.list(path=f"groups/{EXCHANGE}/owners/$ref", method="POST")
        assert add.body["@odata.id"].endswith(f"/directoryObjects/{record.request.target}")
        assert members(product, "owner") == [record.request.target] and members(product) == []
        assert product.graph.calls.list(path=GROUP_REQUESTS, method="POST") == []

        product.services.grants.revoke(record.id, active.grant.generation, "deactivated")
        assert product.store.get(record.id).state is State.REVOKED
        [delete] = product.graph.calls.list(path=f"groups/{EXCHANGE}/owners/", method="DELETE")
        assert delete.path.endswith(f"/owners/{record.request.target}/$ref")
        assert members(product, "owner") == []
    finally:
        product.stop()


def test_overlapping_grants_of_one_group_are_counted_through_the_ledger(tmp_path, redis_client, redis_url, mode):
    product = start(tmp_path, redis_client, redis_url, mode, same_role="allow")
    try:
        short = submit(product, "riley", seconds=400, entitlement="exchange-admins")
        long = submit(product, "riley", seconds=900, entitlement="exchange-admins",
                      justification="Move the finance mailboxes to the new retention policy, INC0012347")
        product.run_jobs()
        assert product.store.get(short.id).state is State.ACTIVE and product.store.get(long.id).state is State.ACTIVE
        creates = (product.graph.calls.list(path=GROUP_REQUESTS, method="POST") if mode == "pim"
                   else product.graph.calls.list(path=MEMBERS_REF, method="POST"))
        assert len([c for c in creates if c.body.get("action", "adminAssign") == "adminAssign"]) == 1
        product.advance(401)
        product.run_jobs()
        ended = product.store.get(short.id)
        assert ended.state is State.EXPIRED
        expired = next(e for e in product.audit.for_request(short.id) if e.event == "grant.expired")
        assert expired.data["still_covered_by"] == [long.id] and not expired.data["removed_in_graph"]
        assert short.request.target in members(product), "the longer grant still covers the membership"
        product.advance(500)
        product.run_jobs()
        assert product.store.get(long.id).state is State.EXPIRED
        assert short.request.target not in members(product)
    finally:
        product.stop()


def test_the_reconciler_ends_an_expired_direct_membership_whose_revoke_was_lost(tmp_path, redis_client, redis_url):
    product = start(tmp_path, redis_client, redis_url, "direct")
    try:
        record = submit(product, "kai", seconds=300, entitlement="exchange-admins",
                        justification="Restore the journaling rule on the legal mailboxes, INC0012348",
                        ticket="INC0012348")
        product.run_jobs()
        active = product.store.get(record.id)
        assert active.state is State.ACTIVE, active.failure
        product.services.queue.scheduler.cancel(f"revoke_{record.id}_{active.grant.generation}")
        product.advance(330)
        product.run_jobs()
        assert record.request.target in members(product), "nothing removes it without the scheduled revoke"
        report = product.services.reconciler.tick()
        assert report.overdue_revokes == [record.id]
        product.run_jobs()
        assert product.store.get(record.id).state is State.EXPIRED
        assert record.request.target not in members(product)
    finally:
        product.stop()


def test_a_group_pim_does_not_manage_fails_with_a_clear_reason(tmp_path, redis_client, redis_url):
    product = start(tmp_path, redis_client, redis_url, "pim")
    try:
        record = submit(product, "sam", seconds=600, entitlement="sharepoint-admins")
        product.run_jobs()
        failed = product.store.get(record.id)
        assert failed.state is State.FAILED
        assert "InvalidRoleAssignmentRequest" in failed.failure and "not managed" in failed.failure
        assert not product.graph.state()["memberships"].get(SHAREPOINT)
    finally:
        product.stop()


def test_the_foreign_scan_reports_a_group_membership_breakglass_did_not_make(tmp_path, redis_client, redis_url,
                                                                            mode):
    product = start(tmp_path, redis_client, redis_url, mode)
    try:
        ours = submit(product, "sam", seconds=600, entitlement="exchange-admins")
        product.run_jobs()
        assert product.store.get(ours.id).state is State.ACTIVE
        riley = "cccccccc-0000-0000-0000-000000000001"
        if mode == "pim":
            product.graph.set_state({"group_assignments": [
                {"principalId": riley, "groupId": EXCHANGE, "accessId": "member",
                 "endDateTime": "2099-01-01T00:00:00Z"}]})
        else:
            product.graph.set_state({"memberships": {**product.graph.state()["memberships"],
                                                     EXCHANGE: [ours.request.target, riley]}})
        found = product.services.foreign_scan.scan()
        assert [(f["principal"], f["role"]) for f in found] == [(riley, "Exchange Admins (JIT) (group member)")]
        assert found[0]["action"] == "reported"
    finally:
        product.stop()


def test_pims_five_minute_floor_defers_an_early_group_removal(tmp_path, redis_client, redis_url):
    from services.workflow.access import Who
    from tests.factories import PEOPLE

    product = start_product(tmp_path, redis_client, redis_url, policy_file=group_policy(tmp_path),
                            stack_config={"pim_min_active_seconds": 300})
    try:
        record = submit(product, "sam", seconds=1800, entitlement="exchange-admins")
        product.run_jobs()
        sam = PEOPLE["sam"]
        product.services.access.deactivate(record.id, Who(sam.object_id, sam.display_name))
        product.run_jobs()
        assert product.store.get(record.id).state is State.REVOKING
        deferred = [e for e in product.audit.for_request(record.id) if e.event == "grant.revoke_deferred"]
        assert deferred and "ActiveDurationTooShort" in deferred[0].data["reason"]
        assert record.request.target in members(product)
        product.advance(303)
        product.run_jobs()
        assert product.store.get(record.id).state is State.REVOKED
        assert group_instances(product) == [] and record.request.target not in members(product)
    finally:
        product.stop()


def test_a_standing_member_is_never_adopted_and_is_reported_by_the_foreign_scan(tmp_path, redis_client, redis_url,
                                                                               mode):
    product = start(tmp_path, redis_client, redis_url, mode)
    try:
        sam = "cccccccc-0000-0000-0000-000000000003"
        product.graph.set_state({"memberships": {**product.graph.state()["memberships"], EXCHANGE: [sam]}})
        record = submit(product, "sam", seconds=600, entitlement="exchange-admins")
        product.run_jobs()
        failed = product.store.get(record.id)
        assert failed.state is State.FAILED and "needs review" in failed.failure, failed.failure
        assert members(product) == [sam], "the standing membership is left alone"
        [found] = product.services.foreign_scan.scan()
        assert (found["principal"], found["action"]) == (sam, "reported")
        assert found["kind"] == ("permanent" if mode == "pim" else "direct")
    finally:
        product.stop()
