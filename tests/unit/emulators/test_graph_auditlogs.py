"""Graph's sessions, audit logs and Identity Protection, built from the graph/ fixtures (PROTOCOL_NOTES §8.1-8.3,
8.5): revokeSignInSessions, signIns and directoryAudits with $filter, $top and @odata.nextLink paging, the licence
403, log latency, the reporting APIs' 429, and riskyUsers (404 = never risky)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.emulators import GraphEmulator, demo_seed
from services.emulators.fixture_files import load_fixture, response_of

from .conftest import Served

RILEY = "cccccccc-0000-0000-0000-000000000001"


def path_of(fixture: str) -> str:
    parts = urlsplit(load_fixture(fixture)["request"]["url"])
    return parts.path + ("?" + parts.query if parts.query else "")


def fixture_rows(*fixtures: str) -> list[dict[str, Any]]:
    return [row for f in fixtures for row in response_of(f)[2]["value"]]


SIGN_INS = fixture_rows("graph/signins_list_filter_user_page1.http.json",
                        "graph/signins_list_filter_user_page2_last.http.json")
AUDITS = fixture_rows("graph/directory_audits_filter_user_window.http.json")


@pytest.fixture
def logs(graph: Served) -> Served:
    clock = graph.emulator.clock
    clock.set_offset(clock.offset_s + (datetime(2025, 6, 1, 11, 0, tzinfo=UTC) - clock.now()).total_seconds())
    graph.emulator.set_state({"sign_ins": SIGN_INS, "directory_audits": AUDITS,
                              "risky_users": [response_of("graph/risky_user_get.http.json")[2]]})
    return graph


def test_revoke_sign_in_sessions_answers_as_the_fixture_and_is_recorded(logs: Served) -> None:
    response = logs.post(path_of("graph/user_revoke_signin_sessions.http.json"))
    assert (response.status_code, response.json()) == response_of("graph/user_revoke_signin_sessions.http.json")[::2]
    state = logs.emulator.state()
    assert state["sessions_valid_from"][RILEY].startswith("2025-06-01T11:00:00")
    unknown = logs.post("/v1.0/users/cccccccc-0000-0000-0000-0000000000ff/revokeSignInSessions")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "Request_ResourceNotFound"


def test_sign_ins_page_newest_first_and_follow_next_link_verbatim(logs: Served) -> None:
    first = logs.get(path_of("graph/signins_list_filter_user_page1.http.json"))
    assert first.status_code == 200
    body = first.json()
    assert body["value"] == response_of("graph/signins_list_filter_user_page1.http.json")[2]["value"]
    link = urlsplit(body["@odata.nextLink"])
    assert link.path == "/v1.0/auditLogs/signins" and "$skiptoken=" in link.query  # lower case, as Graph
    second = logs.get(link.path + "?" + link.query).json()
    assert second["value"] == response_of("graph/signins_list_filter_user_page2_last.http.json")[2]["value"]
    assert "@odata.nextLink" not in second
    times = [r["createdDateTime"] for r in body["value"] + second["value"]]
    assert times == sorted(times, reverse=True)


def test_sign_ins_filter_on_a_time_window_and_a_user(logs: Served) -> None:
    rows = logs.get(f"/v1.0/auditLogs/signIns?$filter=userId eq '{RILEY}' and createdDateTime ge "
                    "2025-06-01T10:04:00Z and createdDateTime le 2025-06-01T10:05:00Z").json()["value"]
    assert rows and all("2025-06-01T10:04" in r["createdDateTime"] for r in rows)
    assert logs.get("/v1.0/auditLogs/signIns?$filter=userId eq 'cccccccc-0000-0000-0000-000000000009'"
                    ).json()["value"] == []


def test_directory_audits_filter_on_the_window_and_the_initiating_user(logs: Served) -> None:
    response = logs.get(path_of("graph/directory_audits_filter_user_window.http.json"))
    assert response.status_code == 200
    expected = response_of("graph/directory_audits_filter_user_window.http.json")[2]["value"]
    assert sorted(r["id"] for r in response.json()["value"]) == sorted(r["id"] for r in expected)
    earlier = logs.get("/v1.0/auditLogs/directoryAudits?$filter=activityDateTime le 2025-06-01T09:00:00Z")
    assert earlier.json()["value"] == []


def test_a_tenant_without_premium_gets_the_licence_403_on_sign_ins_not_on_directory_audits(logs: Served) -> None:
    logs.emulator.set_state({"audit_licence": "free"})
    response = logs.get(path_of("graph/signins_list_filter_user_page1.http.json"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
    assert logs.get(path_of("graph/directory_audits_filter_user_window.http.json")).status_code == 200


def test_records_appear_only_after_the_log_latency(logs: Served) -> None:
    late = dict(SIGN_INS[0], id="late-1", createdDateTime="2025-06-01T10:59:00Z", _visibleAt="2025-06-01T11:04:00Z")
    logs.emulator.set_state({"sign_ins": [*SIGN_INS, late]})
    query = f"/v1.0/auditLogs/signIns?$filter=userId eq '{RILEY}'"
    assert "late-1" not in [r["id"] for r in logs.get(query).json()["value"]]
    logs.emulator.clock.advance(timedelta(minutes=5).total_seconds())
    rows = logs.get(query).json()["value"]
    assert rows[0]["id"] == "late-1" and "_visibleAt" not in rows[0]


def test_the_reporting_apis_answer_429_with_retry_after_past_their_rate(logs: Served) -> None:
    logs.emulator.set_state({"reporting_rate_limit": 0.5})  # 5 requests per 10 s
    statuses = [logs.get("/v1.0/auditLogs/signIns?$top=1") for _ in range(6)]
    assert [r.status_code for r in statuses[:5]] == [200] * 5
    assert statuses[5].status_code == 429 and float(statuses[5].headers["Retry-After"]) > 0


def test_risky_user_row_and_404_for_never_risky(logs: Served) -> None:
    found = logs.get(path_of("graph/risky_user_get.http.json"))
    assert found.status_code == 200
    assert found.json()["riskLevel"] == "medium" and found.json()["riskState"] == "atRisk"
    never = logs.get(path_of("graph/risky_user_get_404_never_risky.http.json"))
    assert never.status_code == 404


def test_permissions_are_enforced_when_asked(logs: Served) -> None:
    logs.emulator.set_state({"enforce_roles": True})
    token = logs.emulator.mint_token(roles=["User.Read.All"])
    headers = {"Authorization": f"Bearer {token}"}
    assert logs.get("/v1.0/auditLogs/signIns", headers=headers).status_code == 403
    assert logs.post(f"/v1.0/users/{RILEY}/revokeSignInSessions", headers=headers).status_code == 403
    allowed = {"Authorization": f"Bearer {logs.emulator.mint_token(roles=['User.RevokeSessions.All'])}"}
    assert logs.post(f"/v1.0/users/{RILEY}/revokeSignInSessions", headers=allowed).status_code == 200


def test_the_demo_seed_loads(graph: Served) -> None:
    GraphEmulator(min_active_seconds=0).seed(demo_seed()["graph"])
