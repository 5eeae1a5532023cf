"""Bot Connector v3: replies, sends, updates with history, conversation creation and member lookup."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from services.emulators import BotConnectorEmulator, demo_seed
from services.emulators.fixture_files import body_of, load_fixture, response_of

from .conftest import Served

REPLY = load_fixture("botframework/sdk_outbound_reply_with_card.http.json")["request"]
UPDATE = load_fixture("botframework/sdk_outbound_update_activity.http.json")["request"]
CHANNEL = load_fixture("botframework/sdk_outbound_create_channel_conversation.http.json")["request"]
PERSONAL = load_fixture("botframework/create_conversation_personal_doc.http.json")["request"]
CONVERSATION_ID = REPLY["body"]["conversation"]["id"]


@pytest.fixture
def connector(serve: Callable[..., Served]) -> Served:
    emulator = BotConnectorEmulator()
    emulator.seed(demo_seed()["botconnector"])
    return serve(emulator)


def path_of(url: str) -> str:
    return urlsplit(url).path  # keeps the percent-encoding exactly as the SDK sent it


def test_reply_to_percent_encoded_conversation_is_stored_decoded(connector: Served) -> None:
    response = connector.post(path_of(REPLY["url"]), json=REPLY["body"])
    assert response.status_code == 200
    assert set(response.json()) == set(body_of("botframework/sdk_outbound_reply_with_card.http.json"))
    activity_id = response.json()["id"]
    [stored] = connector.emulator.activities(CONVERSATION_ID)
    assert stored["id"] == activity_id
    assert stored["attachments"][0]["content"]["type"] == "AdaptiveCard"


def test_update_replaces_the_card_and_keeps_every_version(connector: Served) -> None:
    activity_id = connector.post(path_of(REPLY["url"]), json=REPLY["body"]).json()["id"]
    update_path = path_of(UPDATE["url"]).rsplit("/", 1)[0] + f"/{activity_id}"
    response = connector.put(update_path, json={**UPDATE["body"], "id": activity_id})
    assert (response.status_code, response.json()) == (200, {"id": activity_id})

    assert connector.emulator.activity(CONVERSATION_ID, activity_id)["text"] == "Request approved"
    versions = connector.emulator.versions(CONVERSATION_ID, activity_id)
    assert [v["op"] for v in versions] == ["create", "update"]
    assert "attachments" in versions[0]["activity"] and "attachments" not in versions[1]["activity"]


def test_update_of_an_unknown_activity_is_404(connector: Served) -> None:
    response = connector.put(path_of(UPDATE["url"]), json=UPDATE["body"])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ActivityNotFound"


def test_send_to_conversation_without_reply_to(connector: Served) -> None:
    response = connector.post(f"/v3/conversations/{CONVERSATION_ID}/activities",
                              json={"type": "message", "text": "hello"})
    assert response.status_code == 201
    assert connector.emulator.activities(CONVERSATION_ID)[0]["text"] == "hello"


def test_create_channel_conversation_exactly_as_captured(connector: Served) -> None:
    response = connector.post("/v3/conversations", json=CHANNEL["body"])
    status, _, expected = response_of("botframework/sdk_outbound_create_channel_conversation.http.json")
    assert response.status_code == status
    body = response.json()
    assert set(body) == set(expected)
    channel_id = CHANNEL["body"]["channelData"]["channel"]["id"]
    assert body["id"] == f"{channel_id};messageid={body['activityId']}"
    assert connector.emulator.activities(body["id"])[0]["text"] == CHANNEL["body"]["activity"]["text"]

    # The root post is updated through the thread id, percent-encoded like the SDK does it.
    encoded = body["id"].replace(":", "%3A").replace("@", "%40").replace(";", "%3B").replace("=", "%3D")
    updated = connector.put(f"/v3/conversations/{encoded}/activities/{body['activityId']}",
                            json={"type": "message", "text": "JIT request INC0010001 completed"})
    assert updated.status_code == 200
    assert [v["op"] for v in connector.emulator.versions(body["id"], body["activityId"])] == ["create", "update"]


def test_create_personal_conversation_is_stable_per_user(connector: Served) -> None:
    body = {**PERSONAL["body"], "members": [{"id": "29:riley"}],
            "channelData": {"tenant": {"id": "aaaaaaaa-0000-0000-0000-000000000001"}}}
    first = connector.post("/v3/conversations", json=body)
    assert first.status_code == 200
    assert first.json()["id"].startswith("a:")
    assert connector.post("/v3/conversations", json=body).json() == first.json()
    seeded = demo_seed()["tenant"]["people"][0]
    assert first.json()["id"] == seeded["personal_conversation_id"]


def test_create_conversation_with_bad_parameters_is_bad_syntax(connector: Served) -> None:
    response = connector.post("/v3/conversations", json={"isGroup": True})
    status, _, expected = response_of("botframework/connector_error_400_bad_syntax.http.json")
    assert (response.status_code, response.json()) == (status, expected)


def test_bad_syntax_fault_for_a_team_without_the_bot(connector: Served) -> None:
    connector.emulator.add_fault(path="^/v3/conversations$", method="POST", status=400, times=1)
    response = connector.post("/v3/conversations", json=CHANNEL["body"])
    assert (response.status_code, response.json()) == response_of(
        "botframework/connector_error_400_bad_syntax.http.json")[::2]


def test_member_lookup_by_mri_or_aad_object_id(connector: Served) -> None:
    by_mri = connector.get(f"/v3/conversations/{CONVERSATION_ID}/members/29:dana").json()
    assert {k: by_mri[k] for k in ("id", "name", "aadObjectId", "userPrincipalName", "email", "tenantId")} == {
        "id": "29:dana", "name": "Dana Whitfield", "aadObjectId": "cccccccc-0000-0000-0000-000000000002",
        "userPrincipalName": "dana@contoso.example", "email": "dana@contoso.example",
        "tenantId": "aaaaaaaa-0000-0000-0000-000000000001",
    }
    by_aad = connector.get(f"/v3/conversations/{CONVERSATION_ID}/members/cccccccc-0000-0000-0000-000000000002")
    assert by_aad.json()["id"] == "29:dana"
    assert connector.get(f"/v3/conversations/{CONVERSATION_ID}/members/29:nobody").status_code == 404


def test_optional_auth_rejects_missing_bearer(serve: Callable[..., Served]) -> None:
    strict = serve(BotConnectorEmulator(require_auth=True))
    assert strict.post(path_of(REPLY["url"]), json=REPLY["body"]).status_code == 401
    authorised = strict.post(path_of(REPLY["url"]), json=REPLY["body"], headers={"Authorization": "Bearer x"})
    assert authorised.status_code == 200
