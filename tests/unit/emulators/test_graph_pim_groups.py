"""Graph PIM for Groups and direct membership: schedule requests keyed by groupId + accessId, instances that need a
filter, the membership PIM provisions (and takes away at the end), onboarding, and members/$ref."""

from __future__ import annotations

from typing import Any

import pytest

from services.emulators.fixture_files import body_of, load_fixture

from .conftest import Served, same_keys

PG = "/v1.0/identityGovernance/privilegedAccess/group"
FIXTURE_GROUP = "ffffffff-0000-0000-0000-000000000002"
RILEY = "cccccccc-0000-0000-0000-000000000001"
SAM = "cccccccc-0000-0000-0000-000000000003"
UNMANAGED = "22222222-0000-0000-0000-000000000002"


@pytest.fixture
def groups(graph: Served) -> Served:
    state = graph.emulator.state()
    graph.emulator.set_state({"groups": [*state["groups"], {"id": FIXTURE_GROUP, "displayName": "Fixture group"}],
                              "pim_groups": [*state["pim_groups"], FIXTURE_GROUP]})
    return graph


def assign_body(**extra: Any) -> dict[str, Any]:
    body = load_fixture("graph/pim_group_assignment_schedule_request_admin_assign_pt30m.http.json")["request"]["body"]
    return {**body, **extra}


def instances(graph: Served, query: str) -> Any:
    return graph.get(f"{PG}/assignmentScheduleInstances", params={"$filter": query})


def members(graph: Served, group: str = FIXTURE_GROUP, rel: str = "members") -> list[str]:
    return [m["id"] for m in graph.get(f"/v1.0/groups/{group}/{rel}").json()["value"]]


def test_admin_assign_matches_the_fixture_and_provisions_the_membership(groups: Served) -> None:
    response = groups.post(f"{PG}/assignmentScheduleRequests", json=assign_body())
    assert response.status_code == 201
    body = response.json()
    same_keys(body, body_of("graph/pim_group_assignment_schedule_request_admin_assign_pt30m.http.json"))
    assert (body["status"], body["action"], body["accessId"], body["groupId"]) == (
        "Provisioned", "adminAssign", "member", FIXTURE_GROUP)
    assert body["targetScheduleId"] == f"{FIXTURE_GROUP}_member_{body['id']}"
    [row] = instances(groups, f"groupId eq '{FIXTURE_GROUP}' and principalId eq '{RILEY}'").json()["value"]
    same_keys(row, body_of("graph/pim_group_assignment_schedule_instances_filter.http.json")["value"][0])
    assert row["id"] == body["targetScheduleId"] and row["accessId"] == "member"
    assert RILEY in members(groups)
    again = groups.post(f"{PG}/assignmentScheduleRequests", json=assign_body())
    assert (again.status_code, again.json()["error"]["code"]) == (400, "RoleAssignmentExists")


def test_the_membership_ends_at_the_expiration_and_admin_remove_takes_it_early(groups: Served) -> None:
    groups.post(f"{PG}/assignmentScheduleRequests", json=assign_body())
    groups.emulator.clock.advance(31 * 60)
    assert instances(groups, f"groupId eq '{FIXTURE_GROUP}'").json()["value"] == []
    assert RILEY not in members(groups)
    groups.post(f"{PG}/assignmentScheduleRequests", json=assign_body())
    remove = load_fixture("graph/pim_group_assignment_schedule_request_admin_remove.http.json")["request"]["body"]
    response = groups.post(f"{PG}/assignmentScheduleRequests", json=remove)
    assert (response.status_code, response.json()["status"]) == (201, "Revoked")
    assert RILEY not in members(groups)
    missing = groups.post(f"{PG}/assignmentScheduleRequests", json=remove)
    assert missing.json()["error"]["code"] == "RoleAssignmentDoesNotExist"


def test_admin_remove_within_five_minutes_is_refused(groups: Served) -> None:
    groups.emulator.set_state({"min_active_seconds": 300})
    groups.post(f"{PG}/assignmentScheduleRequests", json=assign_body())
    remove = load_fixture("graph/pim_group_assignment_schedule_request_admin_remove.http.json")["request"]["body"]
    response = groups.post(f"{PG}/assignmentScheduleRequests", json=remove)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "ActiveDurationTooShort")


def test_instances_need_a_group_or_principal_filter(groups: Served) -> None:
    assert instances(groups, "accessId eq 'member'").status_code == 400
    assert groups.get(f"{PG}/assignmentScheduleInstances").status_code == 400


def test_a_group_pim_does_not_manage_is_refused_with_a_configurable_error(groups: Served) -> None:
    body = assign_body(groupId=UNMANAGED)
    response = groups.post(f"{PG}/assignmentScheduleRequests", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "InvalidRoleAssignmentRequest")
    groups.emulator.set_state({"pim_group_unmanaged_error": {"status": 403, "code": "Forbidden"}})
    assert groups.post(f"{PG}/assignmentScheduleRequests", json=body).status_code == 403
    policies = groups.get("/v1.0/policies/roleManagementPolicyAssignments",
                          params={"$filter": f"scopeId eq '{UNMANAGED}' and scopeType eq 'Group'"}).json()
    assert policies["value"] == []
    managed = groups.get("/v1.0/policies/roleManagementPolicyAssignments",
                         params={"$filter": f"scopeId eq '{FIXTURE_GROUP}' and scopeType eq 'Group'"}).json()
    assert sorted(r["roleDefinitionId"] for r in managed["value"]) == ["member", "owner"]


def test_members_and_owners_by_ref(groups: Served) -> None:
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{SAM}"}
    assert groups.post(f"/v1.0/groups/{UNMANAGED}/members/$ref", json=ref).status_code == 204
    again = groups.post(f"/v1.0/groups/{UNMANAGED}/members/$ref", json=ref)
    assert (again.status_code, again.json()["error"]["code"]) == (400, "Request_BadRequest")
    assert groups.post(f"/v1.0/groups/{UNMANAGED}/owners/$ref", json=ref).status_code == 204
    assert members(groups, UNMANAGED) == [SAM] and members(groups, UNMANAGED, "owners") == [SAM]
    assert groups.delete(f"/v1.0/groups/{UNMANAGED}/members/{SAM}/$ref").status_code == 204
    assert groups.delete(f"/v1.0/groups/{UNMANAGED}/members/{SAM}/$ref").status_code == 404
    assert members(groups, UNMANAGED) == [] and members(groups, UNMANAGED, "owners") == [SAM]
    bad = groups.post(f"/v1.0/groups/{UNMANAGED}/members/$ref", json={"@odata.id": "x"})
    assert bad.status_code == 400
