"""Graph PIM: schedule requests, instances (expiring by the injected clock), direct assignments, throttling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.emulators import Clock, GraphEmulator, RoleSettings, demo_seed, instance_id
from services.emulators.fixture_files import body_of, load_fixture, response_of
from services.emulators.isotime import parse_datetime

from .conftest import Served, same_keys

RM = "/v1.0/roleManagement/directory"
REQUESTS = f"{RM}/roleAssignmentScheduleRequests"
INSTANCES = f"{RM}/roleAssignmentScheduleInstances"
ASSIGNMENTS = f"{RM}/roleAssignments"
RILEY = "cccccccc-0000-0000-0000-000000000001"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
HELPDESK_ADMIN = "729827e3-9c14-49f7-bb1b-9608f156bbb8"
BOTH = f"principalId eq '{RILEY}' and roleDefinitionId eq '{GLOBAL_ADMIN}'"


def assign_body(duration: str = "PT30M", **extra: Any) -> dict[str, Any]:
    body = load_fixture("graph/role_assignment_schedule_request_admin_assign_pt30m.http.json")["request"]["body"]
    body["scheduleInfo"]["expiration"] = {"type": "AfterDuration", "duration": duration}  # input enum casing
    return {**body, **extra}


def remove_body() -> dict[str, Any]:
    return load_fixture("graph/role_assignment_schedule_request_admin_remove.http.json")["request"]["body"]


def assert_graph_error(response: Any, fixture: str) -> None:
    status, _, expected = response_of(fixture)
    assert response.status_code == status
    assert response.json()["error"]["code"] == expected["error"]["code"]
    assert response.json()["error"]["message"] == expected["error"]["message"]
    same_keys(response.json()["error"]["innerError"], expected["error"]["innerError"])


def test_admin_assign_matches_the_fixture_and_normalises_enum_case(graph: Served) -> None:
    response = graph.post(REQUESTS, json=assign_body())
    expected = body_of("graph/role_assignment_schedule_request_admin_assign_pt30m.http.json")
    assert response.status_code == 201
    body = response.json()
    same_keys(body, expected)
    assert body["status"] == "Provisioned"
    assert body["action"] == "adminAssign"
    assert body["targetScheduleId"] == body["id"]
    assert body["scheduleInfo"]["expiration"] == {"type": "afterDuration", "endDateTime": None, "duration": "PT30M"}
    assert body["ticketInfo"] == expected["ticketInfo"]
    assert body["createdBy"]["application"]["id"] == "dddddddd-0000-0000-0000-000000000001"
    # The fixture's requested start (2025) is long past: Graph provisions from "now".
    assert parse_datetime(body["scheduleInfo"]["startDateTime"]) >= graph.emulator.clock.now() - timedelta(minutes=1)
    assert graph.get(f"{REQUESTS}/{body['id']}").json()["id"] == body["id"]


def test_instances_filter_matches_the_fixture_including_the_instance_id(graph: Served) -> None:
    request_id = graph.post(REQUESTS, json=assign_body()).json()["id"]
    response = graph.get(INSTANCES, params={"$filter": BOTH})
    [call] = graph.emulator.calls.list(path=INSTANCES)
    assert "%24filter=principalId" in call.query_string or "$filter=principalId" in call.query_string

    expected = body_of("graph/role_assignment_schedule_instances_filter.http.json")
    assert response.json()["@odata.context"] == expected["@odata.context"]
    [instance] = response.json()["value"]
    same_keys(instance, expected["value"][0])
    assert instance["id"] == expected["value"][0]["id"] == instance["roleAssignmentOriginId"]
    assert instance["roleAssignmentScheduleId"] == request_id
    start, end = parse_datetime(instance["startDateTime"]), parse_datetime(instance["endDateTime"])
    assert end - start == timedelta(minutes=30)


def test_instance_id_formula_reproduces_the_documented_ids() -> None:
    for row in load_fixture("graph/role_assignment_schedule_instances_list_doc.json")["value"]:
        assert instance_id(row["roleDefinitionId"], row["principalId"]) == row["id"]


def test_instances_filter_by_one_property_or_none(graph: Served) -> None:
    graph.post(REQUESTS, json=assign_body())
    graph.post(REQUESTS, json=assign_body(roleDefinitionId=HELPDESK_ADMIN))
    assert len(graph.get(INSTANCES).json()["value"]) == 2
    assert len(graph.get(INSTANCES, params={"$filter": f"principalId eq '{RILEY}'"}).json()["value"]) == 2
    only = graph.get(INSTANCES, params={"$filter": f"roleDefinitionId eq '{HELPDESK_ADMIN}'"}).json()["value"]
    assert [i["roleDefinitionId"] for i in only] == [HELPDESK_ADMIN]


def test_instances_expire_by_the_injected_clock_and_history_records_it(graph: Served) -> None:
    graph.post(REQUESTS, json=assign_body("PT30M"))
    graph.emulator.clock.advance(29 * 60)
    assert len(graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]) == 1

    graph.emulator.clock.advance(61)
    assert graph.get(INSTANCES, params={"$filter": BOTH}).json() == body_of(
        "graph/role_assignment_schedule_instances_filter_empty.http.json")
    created, expired = graph.emulator.history()
    assert (created["event"], expired["event"]) == ("created", "expired")
    assert expired["at"] == created["endDateTime"] == expired["scheduledEndDateTime"]


def test_assigning_twice_is_role_assignment_exists(graph: Served) -> None:
    assert graph.post(REQUESTS, json=assign_body()).status_code == 201
    assert_graph_error(graph.post(REQUESTS, json=assign_body()), "graph/error_400_role_assignment_exists.http.json")


def test_admin_remove_revokes_and_matches_the_fixture(graph: Served) -> None:
    graph.post(REQUESTS, json=assign_body())
    response = graph.post(REQUESTS, json=remove_body())
    expected = body_of("graph/role_assignment_schedule_request_admin_remove.http.json")
    assert response.status_code == 201
    same_keys(response.json(), expected)
    assert response.json()["status"] == "Revoked"
    assert response.json()["scheduleInfo"] is None and response.json()["targetScheduleId"] is None
    assert graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"] == []
    removed = graph.emulator.history()[-1]
    assert removed["event"] == "removed" and removed["scheduledEndDateTime"] is not None


def test_removing_without_an_assignment_is_role_assignment_does_not_exist(graph: Served) -> None:
    assert_graph_error(graph.post(REQUESTS, json=remove_body()),
                       "graph/error_400_role_assignment_does_not_exist.http.json")


def test_removing_too_soon_is_active_duration_too_short(graph: Served) -> None:
    graph.emulator.set_state({"min_active_seconds": 300})
    graph.post(REQUESTS, json=assign_body())
    graph.emulator.clock.advance(299)
    assert_graph_error(graph.post(REQUESTS, json=remove_body()),
                       "graph/error_400_active_duration_too_short.http.json")
    graph.emulator.clock.advance(2)
    assert graph.post(REQUESTS, json=remove_body()).status_code == 201


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"principalId": "cccccccc-0000-0000-0000-0000000000ff"}, "SubjectNotFound"),
        ({"roleDefinitionId": "00000000-0000-0000-0000-0000000000ff"}, "RoleNotFound"),
    ],
)
def test_unknown_principal_or_role(graph: Served, change: dict[str, str], code: str) -> None:
    response = graph.post(REQUESTS, json=assign_body(**change))
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)


def test_policy_limits_duration_and_permanence(graph: Served) -> None:
    too_long = graph.post(REQUESTS, json=assign_body("PT25H"))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "RoleAssignmentRequestPolicyValidationFailed"
    assert "ExpirationRule" in too_long.json()["error"]["message"]

    permanent = assign_body()
    permanent["scheduleInfo"]["expiration"] = {"type": "NoExpiration"}
    assert graph.post(REQUESTS, json=permanent).json()["error"]["code"] == (
        "RoleAssignmentRequestPolicyValidationFailed")

    graph.emulator.set_role_settings(GLOBAL_ADMIN, RoleSettings(allow_permanent=True, require_ticket=True))
    accepted = graph.post(REQUESTS, json=permanent)
    assert accepted.status_code == 201
    assert accepted.json()["scheduleInfo"]["expiration"]["type"] == "noExpiration"
    [instance] = graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]
    assert instance["endDateTime"] is None


def test_policy_rules_are_settable_over_http(graph: Served) -> None:
    graph.post("/_emulator/state", json={"role_settings": {GLOBAL_ADMIN: {
        "max_duration": "PT1H", "require_justification": True}}})
    response = graph.post(REQUESTS, json=assign_body("PT2H", justification=""))
    assert response.json()["error"]["message"] == (
        'The following policy rules failed: ["ExpirationRule","JustificationRule"]')


@pytest.mark.parametrize("action", ["adminExtend", "adminUpdate"])
def test_extend_and_update_move_the_end_of_the_active_assignment(graph: Served, action: str) -> None:
    graph.post(REQUESTS, json=assign_body("PT30M"))
    [before] = graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]
    change = {**remove_body(), "action": action,
              "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT2H"}}}
    response = graph.post(REQUESTS, json=change)
    assert response.status_code == 201
    assert response.json()["action"] == action
    [after] = graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]
    assert after["startDateTime"] == before["startDateTime"]
    assert parse_datetime(after["endDateTime"]) - parse_datetime(after["startDateTime"]) == timedelta(hours=2)
    assert graph.emulator.history()[-1]["event"] == "updated"


def test_extend_without_an_assignment_is_role_assignment_does_not_exist(graph: Served) -> None:
    extend = {**remove_body(), "action": "adminExtend",
              "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT1H"}}}
    response = graph.post(REQUESTS, json=extend)
    assert response.json()["error"]["code"] == "RoleAssignmentDoesNotExist"


def test_seeded_permanent_assignment_blocks_assign_and_shows_as_permanent_instance(graph: Served) -> None:
    graph.post("/_emulator/state", json={"assignments": [
        {"principalId": RILEY, "roleDefinitionId": GLOBAL_ADMIN, "kind": "direct"}]})
    assert_graph_error(graph.post(REQUESTS, json=assign_body()), "graph/error_400_role_assignment_exists.http.json")
    [instance] = graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]
    assert instance["endDateTime"] is None
    assert instance["roleAssignmentScheduleId"] == instance["id"]
    graph.emulator.clock.advance(10 * 365 * 86400)
    assert len(graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]) == 1


def test_direct_role_assignments_create_list_get_delete(graph: Served) -> None:
    create = load_fixture("graph/role_assignment_create_doc.http.json")["request"]["body"]
    created = graph.post(ASSIGNMENTS, json={**create, "principalId": RILEY, "roleDefinitionId": HELPDESK_ADMIN})
    assert created.status_code == 201
    same_keys(created.json(), body_of("graph/role_assignment_create_doc.http.json"))
    assignment_id = created.json()["id"]
    assert assignment_id == instance_id(HELPDESK_ADMIN, RILEY)

    duplicate = graph.post(ASSIGNMENTS, json={"principalId": RILEY, "roleDefinitionId": HELPDESK_ADMIN,
                                              "directoryScopeId": "/"})
    assert duplicate.json()["error"]["code"] == "RoleAssignmentExists"
    pair = f"principalId eq '{RILEY}' and roleDefinitionId eq '{HELPDESK_ADMIN}'"
    listed = graph.get(ASSIGNMENTS, params={"$filter": pair})
    assert [a["id"] for a in listed.json()["value"]] == [assignment_id]
    assert graph.get(f"{ASSIGNMENTS}/{assignment_id}").status_code == 200

    graph.emulator.clock.advance(365 * 86400)  # direct assignments never expire by themselves
    deleted = graph.delete(f"{ASSIGNMENTS}/{assignment_id}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert graph.delete(f"{ASSIGNMENTS}/{assignment_id}").status_code == 404


def test_direct_and_pim_assignments_both_show_in_role_assignments(graph: Served) -> None:
    graph.post(REQUESTS, json=assign_body())
    graph.post(ASSIGNMENTS, json={"principalId": RILEY, "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"})
    listed = graph.get(ASSIGNMENTS, params={"$filter": BOTH, "$expand": "roleDefinition"}).json()["value"]
    assert len(listed) == 2
    assert len({a["id"] for a in listed}) == 2
    assert {a["roleDefinition"]["displayName"] for a in listed} == {"Global Administrator"}


def test_write_rate_limit_answers_429_with_fractional_retry_after(serve: Callable[..., Served]) -> None:
    frozen = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)  # a frozen clock: refills happen only when we advance it
    emulator = GraphEmulator(min_active_seconds=0, write_rate_limit=2, write_burst=2, clock=Clock(lambda: frozen))
    emulator.seed(demo_seed()["graph"])
    graph = serve(emulator, headers={"Authorization": f"Bearer {emulator.mint_token()}"})
    statuses = [graph.post(REQUESTS, json=remove_body()).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]  # the first two reach PIM (nothing to remove), the third is throttled

    throttled = graph.emulator.calls.list(method="POST")[-1]
    response = graph.post(REQUESTS, json=remove_body())
    assert response.status_code == 429 and throttled.status == 429
    assert float(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "TooManyRequests"
    same_keys(response.json()["error"], body_of("graph/error_429_too_many_requests_doc.http.json")["error"])
    assert graph.get(INSTANCES).status_code == 200  # reads are never throttled
    assert emulator.throttled_count == 2 and emulator.status_counts[429] == 2

    emulator.clock.advance(1)  # refill by moving time, not by sleeping
    assert graph.post(REQUESTS, json=remove_body()).status_code == 400


def test_injected_429_uses_the_graph_fixture_body(graph: Served) -> None:
    graph.emulator.add_fault(path="roleAssignmentScheduleRequests", method="POST", status=429,
                             headers={"Retry-After": "2.5"}, times=1)
    response = graph.post(REQUESTS, json=assign_body())
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2.5"
    assert response.json()["error"]["code"] == "TooManyRequests"
    assert graph.post(REQUESTS, json=assign_body()).status_code == 201


def test_state_exposes_requests_instances_assignments_and_history(graph: Served) -> None:
    graph.post(REQUESTS, json=assign_body())
    state = graph.get("/_emulator/state").json()
    assert {"users", "groups", "memberships", "role_definitions", "schedule_requests", "instances",
            "role_assignments", "assignments", "history", "throttled_count"} <= set(state)
    assert len(state["instances"]) == len(state["schedule_requests"]) == 1
    assert graph.post("/_emulator/state", json={"instances": []}).status_code == 400


def test_after_date_time_expiration_and_a_future_start(graph: Served) -> None:
    now = graph.emulator.clock.now()
    body = assign_body()
    body["scheduleInfo"] = {
        "startDateTime": (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "expiration": {"type": "AFTERDATETIME", "endDateTime": (now + timedelta(hours=2)).isoformat()},
    }
    response = graph.post(REQUESTS, json=body)
    assert response.status_code == 201
    expiration = response.json()["scheduleInfo"]["expiration"]
    assert expiration["type"] == "afterDateTime" and expiration["duration"] is None
    assert graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"] == []  # scheduled, not active yet
    assert graph.post(REQUESTS, json=assign_body()).json()["error"]["code"] == "RoleAssignmentExists"

    graph.emulator.clock.advance(3601)
    [instance] = graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"]
    assert instance["endDateTime"] == expiration["endDateTime"]
    graph.emulator.clock.advance(3600)
    assert graph.get(INSTANCES, params={"$filter": BOTH}).json()["value"] == []
