"""ServiceNow Table and Attachment APIs against the fixtures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from services.emulators import ServiceNowEmulator, demo_seed
from services.emulators.fixture_files import body_of, load_fixture, response_of

from .conftest import Served, same_keys

INCIDENT = "/api/now/table/incident"
INC_12345 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001"
SAM_SYS_ID = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb0003"
IDENTITY_ON_CALL = "eeeeeeeeeeeeeeeeeeeeeeeeeeee0001"
AUTH = ("svc_breakglass", "breakglass-demo-password")


@pytest.fixture
def snow(serve: Callable[..., Served]) -> Served:
    emulator = ServiceNowEmulator()
    emulator.seed(demo_seed()["servicenow"])
    return serve(emulator, auth=AUTH, headers={"Accept": "application/json"})


def by_number(snow: Served, number: str, **params: str) -> requests.Response:
    return snow.get(INCIDENT, params={"sysparm_query": f"number={number}", "sysparm_limit": "1", **params})


def test_missing_or_wrong_basic_auth_is_the_401_fixture(snow: Served) -> None:
    status, _, expected = response_of("servicenow/error_401_user_not_authenticated.http.json")
    for auth in (None, ("svc_breakglass", "wrong")):
        response = requests.get(snow.url + INCIDENT, auth=auth, timeout=5)
        assert (response.status_code, response.json()) == (status, expected)


def test_incident_by_number_has_the_fixture_envelope_and_fields(snow: Served) -> None:
    response = by_number(snow, "INC0012345")
    expected = body_of("servicenow/incident_get_by_number.http.json")["result"][0]
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "1"
    [record] = response.json()["result"]
    same_keys(record, expected)
    assert all(isinstance(v, (str, dict)) for v in record.values())
    assert record["caller_id"] == {"link": f"{snow.url}/api/now/table/sys_user/{SAM_SYS_ID}", "value": SAM_SYS_ID}
    assert record["assignment_group"]["value"] == IDENTITY_ON_CALL
    assert record["sys_domain"] == expected["sys_domain"] | {"link": f"{snow.url}/api/now/table/sys_user_group/global"}
    assert (record["priority"], record["active"], record["work_notes"]) == ("1", "true", "")


def test_no_match_is_an_empty_result_not_404(snow: Served) -> None:
    response = by_number(snow, "INC9999999")
    status, headers, body = response_of("servicenow/incident_get_by_number_empty.http.json")
    assert (response.status_code, response.json(), response.headers["X-Total-Count"]) == (
        status, body, headers["X-Total-Count"])


def test_dot_walked_fields_and_plain_sys_ids(snow: Served) -> None:
    response = by_number(snow, "INC0012346", sysparm_fields="number,caller_id,caller_id.email,assigned_to.email,"
                         "assignment_group.name,assignment_group.manager.email", sysparm_exclude_reference_link="true")
    assert response.json()["result"] == [{
        "number": "INC0012346",
        "caller_id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbb0006",
        "caller_id.email": "morgan@contoso.example",
        "assigned_to.email": "jordan@contoso.example",
        "assignment_group.name": "Security Operations",
        "assignment_group.manager.email": "morgan@contoso.example",
    }]
    unassigned = by_number(snow, "INC0012345", sysparm_fields="assigned_to.email").json()["result"]
    assert unassigned == [{"assigned_to.email": ""}]


def test_display_values(snow: Served) -> None:
    fields = {"sysparm_fields": "caller_id,state,priority"}
    shown = by_number(snow, "INC0012345", sysparm_display_value="true", **fields).json()["result"][0]
    assert shown["caller_id"] == {"display_value": "Sam Okafor",
                                  "link": f"{snow.url}/api/now/table/sys_user/{SAM_SYS_ID}"}
    assert (shown["state"], shown["priority"]) == ("In Progress", "1 - Critical")
    both = by_number(snow, "INC0012345", sysparm_display_value="all", sysparm_exclude_reference_link="true",
                     **fields).json()["result"][0]
    assert both["caller_id"] == {"display_value": "Sam Okafor", "value": SAM_SYS_ID}
    assert both["state"] == {"display_value": "In Progress", "value": "2"}


def test_get_by_sys_id_users_groups_and_the_404_fixture(snow: Served) -> None:
    assert snow.get(f"{INCIDENT}/{INC_12345}").json()["result"]["number"] == "INC0012345"
    user = snow.get(f"/api/now/table/sys_user/{SAM_SYS_ID}").json()["result"]
    assert (user["user_name"], user["email"]) == ("sam", "sam@contoso.example")
    assert snow.get(f"/api/now/table/sys_user_group/{IDENTITY_ON_CALL}").json()["result"]["name"] == "Identity On-Call"
    missing = snow.get(f"{INCIDENT}/ffffffffffffffffffffffffffffffff")
    assert (missing.status_code, missing.json()) == response_of("servicenow/error_404_no_record_found.http.json")[::2]


def test_group_members_with_dot_walk(snow: Served) -> None:
    response = snow.get("/api/now/table/sys_user_grmember", params={
        "sysparm_query": f"group={IDENTITY_ON_CALL}", "sysparm_fields": "user.email,user.user_name"})
    assert response.json()["result"] == [
        {"user.email": "sam@contoso.example", "user.user_name": "sam"},
        {"user.email": "kai@contoso.example", "user.user_name": "kai"},
    ]
    by_name = snow.get("/api/now/table/sys_user_grmember", params={"sysparm_query": "group.name=Security Operations"})
    assert len(by_name.json()["result"]) == 2


def test_encoded_query_operators(snow: Served) -> None:
    def numbers(query: str) -> list[str]:
        rows = snow.get(INCIDENT, params={"sysparm_query": query, "sysparm_fields": "number"}).json()["result"]
        return sorted(r["number"] for r in rows)

    assert numbers("active=true^priority=1") == ["INC0012345", "INC0012346"]
    assert numbers("short_descriptionLIKEconditional access") == ["INC0012345", "INC0012348"]
    assert numbers("numberININC0012300,INC0012347") == ["INC0012300", "INC0012347"]
    assert numbers("caller_id.user_name=riley^active=false") == ["INC0012300"]
    assert numbers("priority=3^ORpriority=2^active=true") == ["INC0012347", "INC0012348"]
    assert numbers("assigned_toISNOTEMPTY") == ["INC0012346"]
    assert snow.get(INCIDENT, params={"sysparm_query": "garbage"}).status_code == 400


def test_patch_work_notes_echoes_empty_journal_fields_and_stores_entries(snow: Served) -> None:
    request = load_fixture("servicenow/incident_patch_work_notes.http.json")["request"]
    response = snow.patch(f"{INCIDENT}/{INC_12345}", json=request["body"])
    expected = body_of("servicenow/incident_patch_work_notes.http.json")["result"]
    assert response.status_code == 200
    record = response.json()["result"]
    same_keys(record, expected)
    assert (record["work_notes"], record["comments"], record["sys_mod_count"]) == ("", "", "1")
    journal = snow.emulator.journal("INC0012345")
    assert [(e["element"], e["value"]) for e in journal] == [
        ("work_notes", request["body"]["work_notes"]), ("comments", request["body"]["comments"])]
    assert journal[0]["sys_created_by"] == "svc_breakglass" and journal[0]["sys_created_on"]
    assert snow.emulator.work_notes(INC_12345) == [request["body"]["work_notes"]]
    assert snow.get("/_emulator/state").json()["journal"][INC_12345][0]["value"] == request["body"]["work_notes"]


def test_post_child_incident_with_location_and_parent_reference(snow: Served) -> None:
    body = {**load_fixture("servicenow/incident_post_child.http.json")["request"]["body"],
            "parent_incident": INC_12345, "assignment_group": IDENTITY_ON_CALL}
    response = snow.post(INCIDENT, json=body)
    expected = body_of("servicenow/incident_post_child.http.json")["result"]
    assert response.status_code == 201
    record = response.json()["result"]
    same_keys(record, expected)
    assert response.headers["Location"] == f"{snow.url}{INCIDENT}/{record['sys_id']}"
    assert record["parent_incident"] == {"link": f"{snow.url}{INCIDENT}/{INC_12345}", "value": INC_12345}
    assert record["number"] == "INC0012349" and record["priority"] == "3" and record["state"] == "1"
    assert record["opened_by"]["value"] == "bbbbbbbbbbbbbbbbbbbbbbbbbbbb0099"  # the integration user
    assert snow.emulator.incident(INC_12345)["child_incidents"] == "1"
    state = snow.get("/_emulator/state").json()
    assert [i["sys_id"] for i in state["created_child_incidents"]] == [record["sys_id"]]


def test_attachment_upload_returns_fixture_metadata_and_keeps_the_content(snow: Served) -> None:
    content = b"%PDF-1.7 receipt bytes"
    response = snow.post("/api/now/attachment/file", data=content, headers={"Content-Type": "application/pdf"},
                         params={"table_name": "incident", "table_sys_id": INC_12345, "file_name": "receipt.pdf"})
    expected = body_of("servicenow/attachment_upload_file_doc.http.json")["result"]
    assert response.status_code == 201
    meta = response.json()["result"]
    same_keys(meta, expected)
    assert (meta["size_bytes"], meta["content_type"], meta["table_sys_id"]) == (str(len(content)), "application/pdf",
                                                                                INC_12345)
    assert response.headers["Location"] == f"{snow.url}/api/now/attachment/{meta['sys_id']}"
    assert snow.emulator.attachment_content(meta["sys_id"]) == content
    assert snow.get(f"/api/now/attachment/{meta['sys_id']}/file").content == content


def test_attachment_upload_requires_content_type_and_parameters(snow: Served) -> None:
    params = {"table_name": "incident", "table_sys_id": INC_12345, "file_name": "x.txt"}
    no_type = requests.post(snow.url + "/api/now/attachment/file", params=params, data=b"abc", auth=AUTH, timeout=5)
    assert no_type.status_code == 400
    assert no_type.json()["status"] == "failure"
    no_name = snow.post("/api/now/attachment/file", params={**params, "file_name": ""}, data=b"a",
                        headers={"Content-Type": "text/plain"})
    assert no_name.status_code == 400


def test_rate_limit_fault_uses_the_fixture_headers(snow: Served) -> None:
    snow.emulator.add_fault(path="/api/now/table/incident", status=429, times=1)
    response = by_number(snow, "INC0012345")
    _, headers, body = response_of("servicenow/error_429_rate_limit_doc.http.json")
    assert (response.status_code, response.json()) == (429, body)
    assert response.headers["Retry-After"] == headers["Retry-After"]
    assert response.headers["X-RateLimit-Limit"] == headers["X-RateLimit-Limit"]
    assert int(response.headers["X-RateLimit-Reset"]) > 0
    assert by_number(snow, "INC0012345").status_code == 200


def test_invalid_table_is_a_400_failure(snow: Served) -> None:
    response = snow.get("/api/now/table/not_a_table")
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "Invalid table not_a_table", "detail": None}, "status": "failure"}
