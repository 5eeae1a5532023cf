"""`collect_activity`: what a user did in a window, from Graph's directory audits and sign-in logs (the Graph
emulator, built from the fixtures): every page, a 429 ridden out, late records seen on a later pass, and a tenant
without the licence or the permission told in words, never as a failure of the caller."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import redis

from services.clients.graph import GraphClient
from services.clients.tokens import TokenProvider
from services.emulators.fixture_files import response_of
from services.workflow.activity import activity_markdown, collect_activity

from .conftest import FAST, PEOPLE, GraphStack

RILEY = PEOPLE["riley"]["object_id"]
DANA = PEOPLE["dana"]["object_id"]
BASE = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def stamp(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")


def audit(n: int, minutes: float, user: str = RILEY, name: str = "Update user", **extra: object) -> dict:
    row = dict(response_of("graph/directory_audits_filter_user_window.http.json")[2]["value"][0])
    return {**row, "id": f"Directory_{n}", "activityDateTime": stamp(minutes), "activityDisplayName": name,
            "initiatedBy": {"app": None, "user": {**row["initiatedBy"]["user"], "id": user}}, **extra}


def sign_in(n: int, minutes: float, user: str = RILEY) -> dict:
    row = dict(response_of("graph/signins_list_filter_user_page1.http.json")[2]["value"][0])
    return {**row, "id": f"signin-{n}", "userId": user, "createdDateTime": stamp(minutes)}


@pytest.fixture
def graph(graph_stack: GraphStack, redis_client: redis.Redis) -> GraphClient:
    return GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                       retry=FAST)


def test_every_page_of_both_logs_in_the_window_through_a_429(graph: GraphClient, graph_stack: GraphStack):
    graph_stack.graph.set_state({
        "directory_audits": [audit(n, n) for n in range(1, 6)] + [audit(9, 3, user=DANA), audit(10, 50)],
        "sign_ins": [sign_in(1, 0.5), sign_in(2, 40)], "audit_page_size": 2})
    graph_stack.graph.add_fault(path="/v1.0/auditLogs/directoryAudits", method="GET", status=429,
                                headers={"Retry-After": "0.01"}, times=1)
    activity = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert activity.directory.status == "ok" and activity.sign_ins.status == "ok"
    assert sorted(r["id"] for r in activity.directory.rows) == [f"Directory_{n}" for n in range(1, 6)]
    assert [r["id"] for r in activity.sign_ins.rows] == ["signin-1"]
    calls = graph_stack.graph.calls.list(method="GET", path="directoryAudits")
    assert any(c.status == 429 for c in calls) and len([c for c in calls if c.status == 200]) >= 3
    # The same records give the same digest, whatever order Graph returned them in.
    again = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert again.digest() == activity.digest()


def test_records_that_arrive_late_are_seen_by_a_later_pass(graph: GraphClient, graph_stack: GraphStack):
    now = graph_stack.graph.clock.now()
    graph_stack.graph.set_state({"directory_audits": [
        audit(1, 1), {**audit(2, 2), "_visibleAt": (now + timedelta(minutes=4)).isoformat()}]})
    first = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert [r["id"] for r in first.directory.rows] == ["Directory_1"]
    graph_stack.graph.clock.advance(5 * 60)
    second = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert sorted(r["id"] for r in second.directory.rows) == ["Directory_1", "Directory_2"]
    assert second.new_since(first) == 1 and first.digest() != second.digest()


def test_no_licence_and_no_permission_are_said_plainly(graph: GraphClient, graph_stack: GraphStack):
    graph_stack.graph.set_state({"audit_licence": "free", "directory_audits": [audit(1, 1)]})
    graph_stack.graph.add_fault(path="/v1.0/auditLogs/directoryAudits", method="GET",
                                fixture="graph/error_403_authorization_request_denied.http.json", times=1)
    activity = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert activity.sign_ins.status == "licence" and "P1" in activity.sign_ins.note
    assert activity.directory.status == "forbidden" and "AuditLog.Read.All" in activity.directory.note
    markdown = activity_markdown(activity).replace("\\", "")
    assert "no Entra ID P1 or P2 licence" in markdown and "AuditLog.Read.All" in markdown
    # Read again once the permission is granted: the directory audits come back, the licence note stays.
    later = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert later.directory.status == "ok" and len(later.directory.rows) == 1 and later.sign_ins.status == "licence"


def test_a_400_for_a_tenant_without_premium_is_a_licence_note(graph: GraphClient, graph_stack: GraphStack):
    graph_stack.graph.add_fault(path="/v1.0/auditLogs/signIns", method="GET", status=400, times=1, body={"error": {
        "code": "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "message": "Tenant does not have a SKU required for this feature (Entra ID P1 or P2)."}})
    activity = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert activity.sign_ins.status == "licence" and activity.sign_ins.rows == ()


def test_throttled_past_the_retries_is_reported_for_a_later_pass(graph: GraphClient, graph_stack: GraphStack):
    graph_stack.graph.set_state({"directory_audits": [audit(1, 1)]})
    graph_stack.graph.add_fault(path="/v1.0/auditLogs/directoryAudits", method="GET", status=429,
                                headers={"Retry-After": "0.01"}, times=10)
    activity = collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30))
    assert activity.directory.status == "throttled" and activity.incomplete


def test_the_markdown_table_is_time_activity_target_result_and_inert(graph: GraphClient, graph_stack: GraphStack):
    hostile = "Update user | [evil](https://evil.example) <img src=x onerror=alert(1)>\n# heading"
    graph_stack.graph.set_state({"directory_audits": [audit(1, 1, name=hostile)], "sign_ins": [sign_in(1, 2)]})
    markdown = activity_markdown(collect_activity(graph, RILEY, BASE, BASE + timedelta(minutes=30)))
    assert "| time | activity | target | result |" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| 2026-11-23")]
    assert len(table) == 2, markdown
    row = next(line for line in table if "Update user" in line)
    assert row.count(" | ") == 3  # the activity's own pipe is escaped, not a new cell
    assert "helpdesk.user@contoso.example" in row.replace("\\", "") and "success" in row
    # Escaped, so nothing of it renders: no raw HTML, no link, no heading of its own.
    assert re.search(r"(?<!\\)<", markdown) is None and "](https://evil" not in markdown
    assert "\n# heading" not in markdown and "\\# heading" in row
