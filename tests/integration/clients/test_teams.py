"""TeamsClient against the Bot Connector emulator: paths encoded like botbuilder's, with and without auth."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis

from services.clients.teams import TeamsClient, build_teams
from services.emulators import BotConnectorEmulator, RunningEmulator, demo_seed
from services.emulators.botauth import DEMO_BOT_APP_ID
from services.emulators.entra import DEMO_TENANT_ID
from services.ports import TeamsError

from .conftest import BOT_SECRET, FAST, GraphStack, make_settings

TENANT = demo_seed()["tenant"]
RILEY = next(p for p in TENANT["people"] if p["upn"].startswith("riley@"))
CHANNEL = TENANT["approvals_channel_id"]
CARD = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                            "content": {"type": "AdaptiveCard", "version": "1.5", "body": []}}]}


@pytest.fixture
def connector(start: Callable[[Any], RunningEmulator]) -> tuple[BotConnectorEmulator, str]:
    emulator = BotConnectorEmulator()
    emulator.seed(demo_seed()["botconnector"])
    return emulator, start(emulator).url


def recording(client: TeamsClient) -> list[str]:
    """The URLs exactly as requests put them on the wire."""
    sent: list[str] = []
    client.http.session.hooks["response"].append(lambda response, *args, **kwargs: sent.append(response.request.url))
    return sent


@pytest.fixture
def teams() -> TeamsClient:
    return build_teams(make_settings(app_id="", env="development", http_max_attempts=FAST.max_attempts))


def test_auth_disabled_send_reply_update(teams: TeamsClient, connector: tuple[BotConnectorEmulator, str]) -> None:
    emulator, url = connector
    sent = recording(teams)
    conversation = RILEY["personal_conversation_id"]  # "a:1..."

    first = teams.send(url, conversation, {"type": "message", "text": "hello"})
    reply = teams.reply(url + "/", conversation, first, CARD)
    teams.update(url, conversation, reply, {"type": "message", "text": "Request approved"})

    encoded = conversation.replace(":", "%3A")
    assert sent == [f"{url}/v3/conversations/{encoded}/activities",
                    f"{url}/v3/conversations/{encoded}/activities/{first}",
                    f"{url}/v3/conversations/{encoded}/activities/{reply}"]
    assert [a["id"] for a in emulator.activities(conversation)] == [first, reply]
    assert [v["op"] for v in emulator.versions(conversation, reply)] == ["create", "update"]
    assert emulator.activity(conversation, reply)["text"] == "Request approved"
    assert emulator.all_activities()[1]["replyToId"] == first
    assert all("Authorization" not in c.headers for c in emulator.calls.list(path="/v3/"))
    assert emulator.calls.list(method="PUT")[0].body["id"] == reply


def test_create_personal_and_members(teams: TeamsClient, connector: tuple[BotConnectorEmulator, str]) -> None:
    emulator, url = connector
    conversation = teams.create_personal(url, RILEY["mri"], DEMO_TENANT_ID)

    assert conversation == RILEY["personal_conversation_id"]
    [call] = emulator.calls.list(path="/v3/conversations", method="POST")
    assert call.body == {"bot": {"id": "28:"}, "members": [{"id": RILEY["mri"]}], "isGroup": False,
                         "tenantId": DEMO_TENANT_ID, "channelData": {"tenant": {"id": DEMO_TENANT_ID}}}
    roster = teams.members(url, conversation)
    assert [m["userPrincipalName"] for m in roster] == [RILEY["upn"]]
    everyone = teams.members(url + "/", CHANNEL)
    in_teams = [p for p in TENANT["people"] if p["in_teams"]]  # the roster holds only the team's members
    assert len(everyone) == len(in_teams) and {"id", "aadObjectId", "name"} <= set(everyone[0])


def test_post_to_channel_then_update_the_thread(teams: TeamsClient,
                                                connector: tuple[BotConnectorEmulator, str]) -> None:
    emulator, url = connector
    prefixed = url + "/emea/"  # a regional serviceUrl with a path, trailing slash included
    sent = recording(teams)

    thread, activity_id = teams.post_to_channel(prefixed, CHANNEL, CARD, DEMO_TENANT_ID)
    teams.update(prefixed, thread, activity_id, {"type": "message", "text": "Approved by Dana"})

    assert thread == f"{CHANNEL};messageid={activity_id}"
    [create] = emulator.calls.list(path="/emea/v3/conversations", method="POST")
    assert create.body == {"isGroup": True, "activity": CARD,
                           "channelData": {"channel": {"id": CHANNEL}, "tenant": {"id": DEMO_TENANT_ID}}}
    assert sent[1] == (f"{url}/emea/v3/conversations/19%3Abreakglass-approvals%40thread.tacv2%3Bmessageid%3D"
                       f"{activity_id}/activities/{activity_id}")
    assert emulator.activity(thread, activity_id)["text"] == "Approved by Dana"


def test_connector_errors_carry_the_error_code(teams: TeamsClient, connector: tuple[BotConnectorEmulator, str]) -> None:
    emulator, url = connector
    with pytest.raises(TeamsError) as unknown:
        teams.update(url, RILEY["personal_conversation_id"], "1234", {"type": "message", "text": "x"})
    assert (unknown.value.status, unknown.value.code) == (404, "ActivityNotFound")

    emulator.add_fault(path="/v3/conversations$", method="POST", status=400, times=1)
    with pytest.raises(TeamsError) as bad:
        teams.post_to_channel(url, "19:not-installed@thread.tacv2", CARD, DEMO_TENANT_ID)
    assert (bad.value.status, bad.value.code) == (400, "BadSyntax")
    assert "Incorrect conversation creation parameters" in bad.value.message


def test_throttling_and_outages(teams: TeamsClient, connector: tuple[BotConnectorEmulator, str]) -> None:
    emulator, url = connector
    conversation = RILEY["personal_conversation_id"]
    emulator.add_fault(path="/activities$", status=429, headers={"Retry-After": "0.2"}, times=1)
    assert teams.send(url, conversation, {"type": "message", "text": "after a 429"})
    first, second = emulator.calls.list(path="/activities")
    assert (first.status, second.status) == (429, 201) and second.monotonic - first.monotonic >= 0.2

    emulator.add_fault(path="/activities$", status=503)
    teams.http.retry = FAST
    with pytest.raises(TeamsError) as outage:
        teams.send(url, conversation, {"type": "message", "text": "never"})
    assert (outage.value.status, outage.value.code) == (503, "ServiceUnavailable")
    assert "after 4 attempts" in outage.value.message

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(TeamsError) as unreachable:
        teams.send(f"http://127.0.0.1:{free}/", conversation, {"type": "message", "text": "x"})
    assert (unreachable.value.status, unreachable.value.code) == (0, "Connection")


def test_with_auth_a_shared_bot_framework_token_is_sent(graph_stack: GraphStack, redis_client: redis.Redis,
                                                         start: Callable[[Any], RunningEmulator]) -> None:
    emulator = BotConnectorEmulator(require_auth=True)
    emulator.seed(demo_seed()["botconnector"])
    url = start(emulator).url
    settings = make_settings(env="production", app_id=DEMO_BOT_APP_ID, app_password=BOT_SECRET,
                             app_tenant_id=DEMO_TENANT_ID, app_type="SingleTenant",
                             entra_authority_host=graph_stack.entra_url)
    first, second = build_teams(settings, redis_client), build_teams(settings, redis_client)

    conversation = first.create_personal(url, RILEY["mri"], DEMO_TENANT_ID)
    second.send(url, conversation, {"type": "message", "text": "hello"})
    second.send(url, conversation, {"type": "message", "text": "again"})

    assert all(c.headers["Authorization"].startswith("Bearer ") and c.status in (200, 201)
               for c in emulator.calls.list(path="/v3/"))
    assert emulator.calls.list(path="/v3/conversations", method="POST")[0].body["bot"] == {
        "id": f"28:{DEMO_BOT_APP_ID}"}
    [issued] = graph_stack.entra.issued
    assert (issued["client_id"], issued["audience"]) == (DEMO_BOT_APP_ID, "https://api.botframework.com")
    [token_call] = graph_stack.entra.calls.list(path="/oauth2/v2.0/token")
    assert token_call.path == f"/{DEMO_TENANT_ID}/oauth2/v2.0/token"
    assert token_call.body["scope"] == "https://api.botframework.com/.default"


def test_without_a_token_the_connector_refuses(connector: tuple[BotConnectorEmulator, str]) -> None:
    emulator, url = connector
    emulator.set_state({"require_auth": True})
    client = build_teams(make_settings(app_id="", env="development"))
    with pytest.raises(TeamsError) as caught:
        client.send(url, RILEY["personal_conversation_id"], {"type": "message", "text": "x"})
    assert (caught.value.status, caught.value.message) == (401, "Authorization has been denied for this request.")
