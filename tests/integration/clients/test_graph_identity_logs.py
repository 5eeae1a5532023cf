"""GraphClient's sessions, audit logs and risk reads against the Graph emulator (PROTOCOL_NOTES §8): any 2xx from
revokeSignInSessions is success; sign-ins and directory audits follow every @odata.nextLink (an empty last page
included) within a time window and ride out a 429; the licence 403 is its own error; riskyUsers' 404 means never
risky."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from services.clients.graph import GraphClient
from services.clients.tokens import TokenProvider
from services.emulators.fixture_files import response_of
from services.ports import GraphNotFoundError, LicenceRequiredError

from .conftest import FAST, PEOPLE, GraphStack

RILEY = PEOPLE["riley"]["object_id"]
BASE = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def graph(graph_stack: GraphStack, redis_client: redis.Redis) -> GraphClient:
    return GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                       retry=FAST)


def sign_in(n: int, minutes: int, user: str = RILEY) -> dict:
    row = dict(response_of("graph/signins_list_filter_user_page1.http.json")[2]["value"][0])
    at = (BASE + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")
    return {**row, "id": f"signin-{n}", "userId": user, "createdDateTime": at}


def audit(n: int, minutes: int, user: str = RILEY) -> dict:
    row = dict(response_of("graph/directory_audits_filter_user_window.http.json")[2]["value"][0])
    at = (BASE + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")
    return {**row, "id": f"Directory_{n}", "activityDateTime": at,
            "initiatedBy": {"app": None, "user": {**row["initiatedBy"]["user"], "id": user}}}


def test_revoking_sessions_is_recorded_and_an_unknown_user_is_not_found(graph: GraphClient,
                                                                       graph_stack: GraphStack):
    graph.revoke_sign_in_sessions(RILEY)
    assert RILEY in graph_stack.graph.state()["sessions_valid_from"]
    with pytest.raises(GraphNotFoundError):
        graph.revoke_sign_in_sessions("cccccccc-0000-0000-0000-0000000000ff")


def test_sign_ins_of_a_window_across_pages_and_a_429(graph: GraphClient, graph_stack: GraphStack):
    rows = [sign_in(n, n) for n in range(7)] + [sign_in(99, 3, user=PEOPLE["dana"]["object_id"])]
    graph_stack.graph.set_state({"sign_ins": rows, "audit_page_size": 2})
    graph_stack.graph.add_fault(path="/v1.0/auditLogs/signins", method="GET", status=429,
                                headers={"Retry-After": "0.01"}, times=1)
    found = graph.sign_ins(user_id=RILEY, since=BASE + timedelta(minutes=1),
                           until=BASE + timedelta(minutes=5, seconds=1))
    assert [r["id"] for r in found] == ["signin-5", "signin-4", "signin-3", "signin-2", "signin-1"]
    calls = graph_stack.graph.calls.list(method="GET")
    assert any(c.status == 429 for c in calls) and len([c for c in calls if c.status == 200]) == 3


def test_directory_audits_initiated_by_the_user_in_a_window(graph: GraphClient, graph_stack: GraphStack):
    graph_stack.graph.set_state({"directory_audits": [audit(1, 10), audit(2, 20), audit(3, 40),
                                                      audit(4, 15, user=PEOPLE["dana"]["object_id"])]})
    found = graph.directory_audits(initiated_by=RILEY, since=BASE, until=BASE + timedelta(minutes=30))
    assert sorted(r["id"] for r in found) == ["Directory_1", "Directory_2"]


def test_a_tenant_without_p1_gets_a_licence_error_not_a_permission_error(graph: GraphClient,
                                                                         graph_stack: GraphStack):
    graph_stack.graph.set_state({"audit_licence": "free"})
    with pytest.raises(LicenceRequiredError) as raised:
        graph.sign_ins(user_id=RILEY, since=BASE)
    assert raised.value.status == 403
    assert graph.directory_audits(initiated_by=RILEY, since=BASE) == []


def test_risky_user_row_or_none_for_never_risky(graph: GraphClient, graph_stack: GraphStack):
    row = {**response_of("graph/risky_user_get.http.json")[2], "id": RILEY}
    graph_stack.graph.set_state({"risky_users": [row]})
    found = graph.risky_user(RILEY)
    assert found is not None and found["riskLevel"] == "medium" and found["riskState"] == "atRisk"
    assert graph.risky_user(PEOPLE["dana"]["object_id"]) is None
