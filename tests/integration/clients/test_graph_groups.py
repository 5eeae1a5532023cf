"""GraphClient's group calls against the Graph emulator: PIM for Groups requests and instances (fixture shapes),
onboarding, direct members/owners by $ref, and the group read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from services.clients.graph import GraphClient, group_schedule_instance, group_schedule_request
from services.clients.tokens import TokenProvider
from services.emulators.fixture_files import body_of
from services.emulators.seed import JIT_GROUPS
from services.ports import GraphError, RoleAssignmentExistsError

from .conftest import FAST, PEOPLE, GraphStack

EXCHANGE, SHAREPOINT = JIT_GROUPS[0][0], JIT_GROUPS[1][0]
RILEY = PEOPLE["riley"]["object_id"]


@pytest.fixture
def graph(graph_stack: GraphStack, redis_client: redis.Redis) -> GraphClient:
    return GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                       retry=FAST)


def test_fixture_shapes_parse_with_either_enum_casing():
    row = body_of("graph/pim_group_assignment_schedule_instances_filter.http.json")["value"][0]
    inst = group_schedule_instance(row)
    assert (inst.group_id, inst.access, inst.assignment_type, inst.member_type) == (
        "ffffffff-0000-0000-0000-000000000002", "member", "assigned", "direct")
    assert inst.end - inst.start == timedelta(minutes=30) and inst.schedule_id == inst.id
    request = group_schedule_request(body_of("graph/pim_group_assignment_schedule_request_admin_assign_pt30m"
                                             ".http.json"))
    assert request.status == "Provisioned" and request.duration == timedelta(minutes=30)
    removed = group_schedule_request(body_of("graph/pim_group_assignment_schedule_request_admin_remove.http.json"))
    assert removed.status == "Revoked" and removed.start is None


def test_assign_reads_back_and_removes_through_pim_for_groups(graph: GraphClient, graph_stack: GraphStack):
    result = graph.assign_group_pim(principal_id=RILEY, group_id=EXCHANGE, access="member", start=datetime.now(UTC),
                                    duration=timedelta(minutes=30), justification="Move the finance mailboxes",
                                    ticket_number="INC0012347", ticket_system="servicenow")
    [call] = graph_stack.graph.calls.list(path="privilegedAccess/group/assignmentScheduleRequests", method="POST")
    assert set(call.body) == {"accessId", "principalId", "groupId", "action", "scheduleInfo", "justification",
                              "ticketInfo"}
    [inst] = graph.group_instances(group_id=EXCHANGE, principal_id=RILEY)
    assert inst.schedule_id == result.target_schedule_id and inst.principal_id == RILEY
    with pytest.raises(RoleAssignmentExistsError):
        graph.assign_group_pim(principal_id=RILEY, group_id=EXCHANGE, access="member", start=datetime.now(UTC),
                               duration=timedelta(minutes=30), justification="again", ticket_number=None,
                               ticket_system=None)
    with pytest.raises(ValueError):
        graph.group_instances()
    assert graph.group_pim_managed(EXCHANGE) and not graph.group_pim_managed(SHAREPOINT)


def test_direct_members_and_owners_by_ref(graph: GraphClient):
    graph.add_group_member(group_id=SHAREPOINT, principal_id=RILEY, access="owner")
    assert graph.group_member_ids(SHAREPOINT, "owner") == {RILEY} and graph.group_member_ids(SHAREPOINT,
                                                                                             "member") == set()
    with pytest.raises(GraphError) as err:  # Graph's "already exist" is a plain 400 Request_BadRequest
        graph.add_group_member(group_id=SHAREPOINT, principal_id=RILEY, access="owner")
    assert err.value.status == 400
    assert graph.remove_group_member(group_id=SHAREPOINT, principal_id=RILEY, access="owner") is True
    assert graph.remove_group_member(group_id=SHAREPOINT, principal_id=RILEY, access="owner") is False
    assert graph.group(EXCHANGE)["displayName"] == "Exchange Admins (JIT)"
    assert graph.group("22222222-0000-0000-0000-00000000dead") is None
