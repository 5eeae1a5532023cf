"""Graph's Teams proactive installation (PROTOCOL_NOTES §9), built from the graph/teamwork_* fixtures: the org
catalog, install (201 / 409 / 403 blocked / 404 unknown catalog id), the filtered and expanded list, the chat id
(404 while it is not ready), and the …Self… permission trap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.emulators import GraphEmulator, demo_seed
from services.emulators.fixture_files import load_fixture, response_of

from .conftest import Served, same_keys

DANA = "cccccccc-0000-0000-0000-000000000002"
MANIFEST_ID = "bbbbbbbb-0000-0000-0000-0000000000e1"
CATALOG_ID = "bbbbbbbb-0000-0000-0000-0000000000c1"


def path_of(fixture: str) -> str:
    url = load_fixture(fixture)["request"]["url"]
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def install_body(fixture: str = "graph/teamwork_user_installed_apps_post.http.json") -> dict[str, Any]:
    return load_fixture(fixture)["request"]["body"]


INSTALL = path_of("graph/teamwork_user_installed_apps_post.http.json")
LIST = path_of("graph/teamwork_user_installed_apps_list_filter_app_expand_bot.http.json")


def test_the_catalog_resolves_the_manifest_id_to_the_catalog_id(graph: Served) -> None:
    response = graph.get(path_of("graph/teamwork_app_catalog_filter_externalid_org.http.json"))
    expected = response_of("graph/teamwork_app_catalog_filter_externalid_org.http.json")[2]
    assert response.status_code == 200
    assert response.json()["value"] == expected["value"]
    # Teams docs spell it "Organization": the comparison is case-insensitive.
    other = graph.get(f"/v1.0/appCatalogs/teamsApps?$filter=externalId eq '{MANIFEST_ID}' and "
                      "distributionMethod eq 'Organization'")
    assert other.json()["value"] == expected["value"]


def test_an_app_not_in_the_catalog_is_an_empty_list_not_a_404(graph: Served) -> None:
    graph.emulator.set_state({"teams_apps": []})
    response = graph.get(path_of("graph/teamwork_app_catalog_filter_externalid_empty.http.json"))
    assert response.status_code == 200
    assert response.json()["value"] == []


def test_install_then_list_then_chat_as_in_the_fixtures(graph: Served) -> None:
    assert graph.get(LIST).json() == response_of(
        "graph/teamwork_user_installed_apps_list_filter_app_empty.http.json")[2]
    created = graph.post(INSTALL, json=install_body())
    assert created.status_code == 201 and created.content == b""
    listed = graph.get(LIST).json()
    expected = response_of("graph/teamwork_user_installed_apps_list_filter_app_expand_bot.http.json")[2]
    assert listed == expected
    chat_path = path_of("graph/teamwork_user_installation_chat_get.http.json")
    assert chat_path.split("/installedApps/")[1].split("/")[0] == listed["value"][0]["id"]
    chat = graph.get(chat_path)
    assert chat.status_code == 200
    assert chat.json()["id"] == response_of("graph/teamwork_user_installation_chat_get.http.json")[2]["id"]


def test_a_second_install_is_a_409_conflict(graph: Served) -> None:
    assert graph.post(INSTALL, json=install_body()).status_code == 201
    again = graph.post(INSTALL, json=install_body())
    status, _, body = response_of("graph/teamwork_user_installed_apps_post_409_conflict.http.json")
    assert again.status_code == status
    assert again.json()["error"]["code"] == body["error"]["code"]


def test_a_user_the_app_permission_policy_blocks_gets_403_access_denied(graph: Served) -> None:
    graph.emulator.set_state({"teams_blocked_users": [DANA]})
    refused = graph.post(INSTALL, json=install_body())
    status, _, body = response_of("graph/teamwork_user_installed_apps_post_403_blocked_by_policy.http.json")
    assert refused.status_code == status
    error = refused.json()["error"]
    assert error["code"] == body["error"]["code"] and error["message"] == body["error"]["message"]
    assert error["innerError"]["code"] == "AccessDenied"
    same_keys(error["innerError"], body["error"]["innerError"])
    assert graph.get(LIST).json()["value"] == []


def test_an_unknown_catalog_id_is_a_404(graph: Served) -> None:
    fixture = "graph/teamwork_user_installed_apps_post_404_app_not_in_catalog.http.json"
    refused = graph.post(path_of(fixture), json=install_body(fixture))
    status, _, body = response_of(fixture)
    assert refused.status_code == status and refused.json()["error"]["code"] == body["error"]["code"]


def test_the_chat_is_404_until_it_is_ready(graph: Served) -> None:
    graph.emulator.set_state({"teams_chat_delay_s": 5})
    graph.post(INSTALL, json=install_body())
    chat_path = path_of("graph/teamwork_user_installation_chat_get.http.json")
    assert graph.get(chat_path).status_code == 404
    graph.emulator.clock.advance(5)
    assert graph.get(chat_path).status_code == 200


@pytest.fixture
def self_only(serve: Callable[..., Served]) -> Served:
    """A token with only the Self permission, from the Graph app (not the app in webApplicationInfo.id)."""
    emulator = GraphEmulator(min_active_seconds=0)
    emulator.seed(demo_seed()["graph"])
    token = emulator.mint_token(roles=["AppCatalog.Read.All", "TeamsAppInstallation.ReadWriteSelfForUser.All"])
    return serve(emulator, headers={"Authorization": f"Bearer {token}"})


def test_the_self_permission_from_another_app_sees_nothing_and_cannot_install(self_only: Served) -> None:
    self_only.emulator.set_state({"teams_installations": [{"userId": DANA, "teamsAppId": CATALOG_ID}]})
    assert self_only.get(LIST).json()["value"] == []  # installed, but invisible to this app
    refused = self_only.post(INSTALL, json=install_body())
    assert refused.status_code == 403


def test_enforced_permissions_refuse_a_token_without_the_install_permission(serve: Callable[..., Served]) -> None:
    emulator = GraphEmulator(min_active_seconds=0, enforce_roles=True)
    emulator.seed(demo_seed()["graph"])
    token = emulator.mint_token(roles=["User.Read.All", "GroupMember.Read.All"])
    served = serve(emulator, headers={"Authorization": f"Bearer {token}"})
    refused = served.post(INSTALL, json=install_body())
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"
    assert served.get(LIST).status_code == 403
    catalog = served.get(path_of("graph/teamwork_app_catalog_filter_externalid_org.http.json"))
    assert catalog.status_code == 403
