"""Graph users, groups, role definitions and bearer-token validation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.emulators import GraphEmulator, demo_seed
from services.emulators.fixture_files import body_of, response_of

from .conftest import Served, same_keys

RILEY = "cccccccc-0000-0000-0000-000000000001"
SAM = "cccccccc-0000-0000-0000-000000000003"
IDENTITY_ON_CALL = "11111111-0000-0000-0000-000000000002"
SECURITY_OPERATIONS = "11111111-0000-0000-0000-000000000003"
ROLE_DEFINITIONS = "/v1.0/roleManagement/directory/roleDefinitions"


def test_user_select_matches_the_fixture_shape(graph: Served) -> None:
    response = graph.get(f"/v1.0/users/{RILEY}", params={"$select": "id,displayName,userPrincipalName,accountEnabled"})
    expected = body_of("graph/user_get_select.http.json")
    assert response.status_code == 200
    same_keys(response.json(), expected)
    assert response.json()["@odata.context"] == expected["@odata.context"]
    assert response.json()["userPrincipalName"] == "riley@contoso.example"
    assert response.json()["accountEnabled"] is True
    assert response.headers["Content-Type"].startswith("application/json;odata.metadata=minimal")


def test_user_without_select_returns_graph_default_properties(graph: Served) -> None:
    body = graph.get("/v1.0/users/riley@contoso.example").json()
    same_keys(body, body_of("graph/user_get_doc.http.json"))
    assert body["id"] == RILEY


def test_unknown_user_is_the_404_fixture(graph: Served) -> None:
    response = graph.get("/v1.0/users/cccccccc-0000-0000-0000-000000000099")
    status, _, fixture = response_of("graph/error_404_request_resource_not_found.http.json")
    assert response.status_code == status
    assert response.json()["error"]["code"] == fixture["error"]["code"]
    assert response.json()["error"]["message"] == fixture["error"]["message"].replace(
        RILEY, "cccccccc-0000-0000-0000-000000000099")
    same_keys(response.json()["error"]["innerError"], fixture["error"]["innerError"])


def test_transitive_member_of_with_cast_and_select(graph: Served) -> None:
    response = graph.get(f"/v1.0/users/{SAM}/transitiveMemberOf/microsoft.graph.group",
                         params={"$select": "id,displayName"})
    body = response.json()
    assert body["@odata.context"].endswith("#groups(id,displayName)")
    assert body["value"] == [{"id": IDENTITY_ON_CALL, "displayName": "Identity On-Call"}]


def test_nested_groups_are_transitive(graph: Served) -> None:
    graph.emulator.set_state({"memberships": {IDENTITY_ON_CALL: [SAM], SECURITY_OPERATIONS: [IDENTITY_ON_CALL]}})
    ids = {g["id"] for g in graph.get(f"/v1.0/users/{SAM}/transitiveMemberOf/microsoft.graph.group").json()["value"]}
    assert ids == {IDENTITY_ON_CALL, SECURITY_OPERATIONS}
    direct = graph.get(f"/v1.0/users/{SAM}/memberOf").json()["value"]
    assert [g["id"] for g in direct] == [IDENTITY_ON_CALL]


def test_check_member_groups_returns_the_groups_the_user_is_in(graph: Served) -> None:
    response = graph.post(f"/v1.0/users/{SAM}/checkMemberGroups",
                          json={"groupIds": [IDENTITY_ON_CALL, SECURITY_OPERATIONS]})
    assert response.status_code == 200
    assert response.json()["value"] == [IDENTITY_ON_CALL]


def test_group_transitive_members_cast_to_users(graph: Served) -> None:
    response = graph.get(f"/v1.0/groups/{IDENTITY_ON_CALL}/transitiveMembers/microsoft.graph.user",
                         params={"$select": "id,displayName,userPrincipalName"})
    assert response.json()["value"] == [
        {"id": SAM, "displayName": "Sam Okafor", "userPrincipalName": "sam@contoso.example"},
        {"id": "cccccccc-0000-0000-0000-000000000007", "displayName": "Kai Lindqvist",
         "userPrincipalName": "kai@contoso.example"},
    ]
    assert graph.get("/v1.0/groups/11111111-0000-0000-0000-000000000099/transitiveMembers").status_code == 404


def test_role_definition_filter_by_display_name_matches_the_fixture(graph: Served) -> None:
    response = graph.get(ROLE_DEFINITIONS, params={"$filter": "displayName eq 'Global Administrator'"})
    expected = body_of("graph/role_definitions_filter_global_admin.http.json")
    assert response.status_code == 200
    assert response.json() == expected


def test_role_definitions_by_template_id_by_id_and_all_five_builtins(graph: Served) -> None:
    template_filter = "templateId eq 'fe930be7-5e62-47db-91af-98c3a49a38b1'"
    by_template = graph.get(ROLE_DEFINITIONS, params={"$filter": template_filter})
    assert [r["displayName"] for r in by_template.json()["value"]] == ["User Administrator"]
    one = graph.get(f"{ROLE_DEFINITIONS}/729827e3-9c14-49f7-bb1b-9608f156bbb8").json()
    assert one["displayName"] == "Helpdesk Administrator"
    assert one["@odata.context"].endswith("roleDefinitions/$entity")
    names = {r["displayName"] for r in graph.get(ROLE_DEFINITIONS).json()["value"]}
    assert names == {"Global Administrator", "Security Administrator", "Conditional Access Administrator",
                     "User Administrator", "Helpdesk Administrator"}
    assert all(r["id"] == r["templateId"] for r in graph.get(ROLE_DEFINITIONS).json()["value"])
    assert graph.get(f"{ROLE_DEFINITIONS}/00000000-0000-0000-0000-000000000000").status_code == 404


def test_unsupported_filters_are_rejected_not_ignored(graph: Served) -> None:
    for bad in ("displayName gt 'A'", "nonsense eq 'x'", "displayName eq 'a' or displayName eq 'b'"):
        response = graph.get(ROLE_DEFINITIONS, params={"$filter": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "BadRequest"


def test_missing_token_is_the_401_fixture(graph: Served) -> None:
    response = graph.http.get(f"{graph.url}/v1.0/users/{RILEY}", headers={"Authorization": ""}, timeout=5)
    status, _, fixture = response_of("graph/error_401_invalid_authentication_token.http.json")
    assert response.status_code == status
    assert response.json()["error"]["code"] == fixture["error"]["code"]
    assert response.json()["error"]["message"] == fixture["error"]["message"]
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lifetime_s": -60}, "Lifetime validation failed, the token is expired."),
        ({"audience": "https://management.azure.com"}, "Access token validation failure. Invalid audience."),
        ({"tenant_id": "aaaaaaaa-0000-0000-0000-00000000ffff"},
         "Access token validation failure. Invalid issuer or tenant."),
        ({"secret": "someone-elses-secret-0123456789-abcdef"}, "Access token validation failure. Invalid signature."),
    ],
)
def test_bad_tokens_are_rejected(graph: Served, overrides: dict[str, object], message: str) -> None:
    token = graph.emulator.mint_token(**overrides)
    response = graph.http.get(f"{graph.url}/v1.0/users/{RILEY}", headers={"Authorization": f"Bearer {token}"},
                              timeout=5)
    assert response.status_code == 401
    assert response.json()["error"] == {**response.json()["error"], "code": "InvalidAuthenticationToken",
                                        "message": message}


def test_app_roles_are_enforced_when_enabled(serve: Callable[..., Served]) -> None:
    emulator = GraphEmulator(enforce_roles=True)
    emulator.seed(demo_seed()["graph"])
    weak = serve(emulator, headers={"Authorization": f"Bearer {emulator.mint_token(roles=['User.Read.All'])}"})
    assert weak.get(f"/v1.0/users/{RILEY}").status_code == 200
    denied = weak.post("/v1.0/roleManagement/directory/roleAssignmentScheduleRequests", json={})
    _, _, fixture = response_of("graph/error_403_authorization_request_denied.http.json")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == fixture["error"]["code"]
    assert denied.json()["error"]["message"] == fixture["error"]["message"]


def test_unknown_route_is_a_graph_style_error(graph: Served) -> None:
    response = graph.get("/v1.0/notARealSegment")
    assert response.status_code == 400
    assert "notARealSegment" in response.json()["error"]["message"]
