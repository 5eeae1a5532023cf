"""A request played through the real Microsoft 365 Agents Playground (npm) as the Teams client, against `breakglass
dev --at monday`: the requester types in their chat, submits the intake card, the on-call identity lead approves
on the card the bot sent to her 1:1 chat, and the role shows up in the Graph emulator.

Everything goes through the Playground's own HTTP routes and websockets (the ones its web UI uses; see
docs/playground.md): messages are always typed by the Playground's current user, card clicks can come from any
member of the conversation. The Playground comes from docs/playground/package.json (`npm ci` there; `.ci/setup-extra`
does it in CI). Without Node or the package the test skips, unless BREAKGLASS_E2E_REQUIRED=1 (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from services.emulators.botauth import DEMO_BOT_APP_ID
from services.emulators.seed import BY_ALIAS
from services.ops.devstack import APPROVALS_CHANNEL, DEMO_TENANT
from services.state.policy_source import read_policy
from tests.e2e.test_devstack import ROOT, free_port, start_dev, stop_dev

PLAYGROUND = ROOT / "docs" / "playground"
CLI = PLAYGROUND / "node_modules" / "@microsoft" / "m365agentsplayground" / "cli.js"
CONFIG = PLAYGROUND / "m365agentsplayground.yml"
APPROVER_CONFIG = PLAYGROUND / "m365agentsplayground.approver.yml"
APPROVALS = APPROVALS_CHANNEL  # the team's second channel in the mock tenant
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
TEXT = "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345"
REQUEST_ID = re.compile(r"\bBG-[A-Z0-9]{6}\b")


def node_or_skip() -> str:
    node = shutil.which("node")
    missing = "Node.js" if node is None else (f"{CLI.relative_to(ROOT)} (run `npm ci` in docs/playground)"
                                              if not CLI.exists() else "")
    if missing:
        if os.environ.get("BREAKGLASS_E2E_REQUIRED") == "1":
            pytest.fail(f"BREAKGLASS_E2E_REQUIRED=1 but {missing} is missing")
        pytest.skip(f"{missing} is missing")
    assert node is not None
    return node


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def requester_config(dev_env: dict[str, str], out: Path) -> dict[str, Any]:
    """docs/playground/m365agentsplayground.yml, with Sam and Kai swapped when Sam is on shift at the stack's
    pretend time: the on-call member gets Global Administrator by rule, the other one needs the lead's approval."""
    config = yaml.safe_load(CONFIG.read_text())
    now = datetime.fromtimestamp(time.time() + float(dev_env["BREAKGLASS_CLOCK_OFFSET"]), UTC)
    on_call = read_policy(ROOT / "policies" / "default.yaml").rotations["identity-oncall"].on_call(now)
    if on_call.object_id == config["currentUser"]["aadObjectId"]:
        i = next(i for i, u in enumerate(config["users"]) if u["id"] == "29:kai")
        config["currentUser"], config["users"][i] = config["users"][i], config["currentUser"]
        config["personalChat"]["id"] = "a:breakglass-playground-kai"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def test_both_mock_tenants_are_the_demo_tenant_with_a_different_person_at_the_keyboard():
    requester, approver = (yaml.safe_load(p.read_text()) for p in (CONFIG, APPROVER_CONFIG))
    for config in (requester, approver):
        assert config["version"] == "0.1.1" and config["tenantId"] == DEMO_TENANT
        assert config["bot"]["id"] == f"28:{DEMO_BOT_APP_ID}"
        assert len(config["users"]) == 5  # exactly five, or the Playground refuses the file
        for user in [config["currentUser"], *config["users"]]:
            person = BY_ALIAS[user["id"].removeprefix("29:")]
            assert (user["name"], user["aadObjectId"], user["userPrincipleName"], user["email"], user["givenName"],
                    user["surname"]) == (person.display_name, person.object_id, person.upn, person.upn,
                                         person.given_name, person.surname)
        assert [c["id"] for c in config["team"]["channels"]] == [APPROVALS]
    people = {u["id"] for u in [requester["currentUser"], *requester["users"]]}
    assert people == {u["id"] for u in [approver["currentUser"], *approver["users"]]}
    assert (requester["currentUser"]["id"], approver["currentUser"]["id"]) == ("29:sam", "29:dana")
    same = ("bot", "groupChat", "team")
    assert {k: requester[k] for k in same} == {k: approver[k] for k in same}
    assert requester["personalChat"] != approver["personalChat"]


class Playground:
    def __init__(self, node: str, workdir: Path, config_path: Path, bot_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "playground.log"
        self.lines: list[str] = []
        env = {**os.environ, "TEAMSAPPTESTER_BROWSER": "none", "M365_AGENTS_PLAYGROUND_CONFIG_PATH": str(config_path),
               "M365_AGENTS_PLAYGROUND_LOGFILE": str(self.log_path)}
        self.proc = subprocess.Popen(
            [node, "-r", str(PLAYGROUND / "loopback.cjs"), str(CLI), "-e", bot_url + "/api/messages", "-c", "msteams",
             "--dt", "-p", str(self.port), "--su", self.url + "/_connector"],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def problem(self) -> str:
        log = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        return "".join(self.lines[-20:]) + log

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = [m.group(1) for line in self.lines if (m := re.match(r"Listening on (\d+)", line))]
            if ports:
                # A busy port makes it pick another one silently, and then --su would point elsewhere.
                assert ports[0] == str(self.port), f"the Playground moved to port {ports[0]}"
                return
            assert self.proc.poll() is None, "the Playground exited:\n" + self.problem()
            time.sleep(0.1)
        raise AssertionError("the Playground did not start:\n" + self.problem())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture
def stack(tmp_path):
    node = node_or_skip()
    data = tmp_path / "dev"
    bot_port = free_port()
    proc, _ = start_dev(data, bot_port, "--at", "monday")
    workdir = tmp_path / "playground"
    workdir.mkdir()
    playground = None
    try:
        env = read_env(data / "dev.env")
        config = requester_config(env, workdir / "m365agentsplayground.yml")
        playground = Playground(node, workdir, workdir / "m365agentsplayground.yml", f"http://127.0.0.1:{bot_port}")
        playground.wait_listening()
        yield {"playground": playground, "config": config, "env": env, "data": data}
    finally:
        if playground is not None:
            playground.stop()
        stop_dev(proc)


# --- reading what the bot sent ----------------------------------------------------------------------------------

def actions(card: Any, verb: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("verb") == verb:
                found.append(node)
            for key, value in node.items():
                if key not in ("fallback", "refresh"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card)
    return found


def input_values(card: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("type", "")).startswith("Input.") and node.get("value") is not None:
                found[node["id"]] = node["value"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card)
    return found


def cards_of(activity: dict[str, Any]) -> list[dict[str, Any]]:
    return [a.get("content") or {} for a in activity.get("attachments") or []]


class Streams:
    """The Playground's conversation stream (chats with the current user) and log stream (every HTTP exchange,
    also messages to chats the UI does not show). Neither replays history, so they are connected first."""

    def __init__(self, url: str):
        self.url = url
        self.conversation: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(self, http: aiohttp.ClientSession) -> None:
        ws = "ws" + self.url[len("http"):]
        for path, sink in (("/_ws_conversation/v1/conversations/stream", self.conversation),
                           ("/_ws/log/stream", self.log)):
            socket = await http.ws_connect(ws + path)
            self.sockets.append(socket)
            self.tasks.append(asyncio.create_task(self._pump(socket, sink)))

    @staticmethod
    async def _pump(socket: aiohttp.ClientWebSocketResponse, sink: list[dict[str, Any]]) -> None:
        async for frame in socket:
            if frame.type == aiohttp.WSMsgType.TEXT:
                sink.append(json.loads(frame.data))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for socket in self.sockets:
            await socket.close()

    async def wait(self, what: str, find: Callable[[], Any], timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = find()
            if found:
                return found
            await asyncio.sleep(0.1)
        seen = [f"{f.get('action')} {f.get('actionConversationId')}" for f in self.conversation[-10:]]
        logged = [f"{(f.get('log') or {}).get('activityName')} {(f.get('log') or {}).get('messageId')}"
                  for f in self.log[-15:]]
        raise AssertionError(f"timed out waiting for {what}; conversation stream: {seen}; log stream: {logged}")

    def bot_messages(self, conversation: str) -> list[tuple[str, dict[str, Any]]]:
        """(message id, card) of every card the bot posted to a chat the current user is in."""
        return [(f["message"]["messageId"], card) for f in self.conversation
                if f.get("action") == "createMessage" and f.get("actionConversationId") == conversation
                for card in cards_of(f["message"])]

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [f["log"] for f in self.log if (f.get("log") or {}).get("activityName") == name]


# --- the scenario -------------------------------------------------------------------------------------------------

async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with http.post(url, json=body) as response:
        text = await response.text()
        assert response.status == 200, f"POST {url} -> {response.status}: {text[:500]}"
        return json.loads(text) if text else None


@pytest.mark.slow
async def test_a_break_glass_request_is_approved_by_the_lead_in_the_playground_and_granted_in_graph(stack):
    pg: Playground = stack["playground"]
    config = stack["config"]
    me, chat = config["currentUser"], config["personalChat"]["id"]
    dana = next(u for u in config["users"] if u["id"] == "29:dana")
    graph = stack["env"]["GRAPH_BASE_URL"].removesuffix("/v1.0")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(pg.url + "/_internal/v1/testConfig") as response:
            loaded = await response.json()
        assert loaded["config"]["currentUser"]["id"] == me["id"], pg.problem()
        streams = Streams(pg.url)
        await streams.connect(http)
        try:
            # The team install (what opening the Approvals channel in the web UI sends): the bot takes the channel
            # as its approvals channel and reads the team roster, which is how it learns Dana's Teams id.
            async with http.get(pg.url + "/_internal/v1/customActivities/template",
                                params={"conversationId": APPROVALS, "type": "install"}) as response:
                install = await response.json()
            assert install["type"] == "installationUpdate"
            await post(http, pg.url + "/_internal/v1/customActivities", install)
            await streams.wait("the bot to read the team roster", lambda: [
                e for e in streams.logged("getConversationMembers") if e["response"]["statusCode"] == 200])

            # The requester types in their 1:1 chat with the bot and gets the intake card, prefilled.
            await post(http, f"{pg.url}/_conversation/v1/conversations/{quote(chat, safe='')}/messages",
                       {"from": {"id": me["id"]}, "text": TEXT, "textFormat": "plain"})
            intake_id, intake = await streams.wait("the intake card", lambda: next(
                ((mid, card) for mid, card in streams.bot_messages(chat) if actions(card, "request.submit")), None))
            values = input_values(intake)
            assert (values["entitlement"], str(values["duration"]), values["ticket"]) == \
                ("global-admin", "30", "INC0012345")

            # Submit: an Action.Execute invoke from the requester, answered with the request's card.
            submit = actions(intake, "request.submit")[0]
            answer = await post(http, pg.url + "/_conversation/v1/invoke", {
                "name": "adaptiveCard/action", "from": {"id": me["id"]}, "conversation": {"id": chat},
                "replyToId": intake_id, "value": {"action": {"type": "Action.Execute", "title": submit["title"],
                                                             "verb": "request.submit",
                                                             "data": {**submit["data"], **values}}}})
            shown = json.dumps(answer["value"])
            assert "Waiting for approval by Dana Whitfield" in shown, shown[:1500]
            request_id = REQUEST_ID.search(shown).group(0)  # type: ignore[union-attr]

            # The bot opens a 1:1 chat with Dana (hidden from the current user, so seen on the log stream) and
            # posts the approver card with Approve/Deny there...
            dana_chat = await streams.wait("the bot to open a 1:1 chat with Dana", lambda: next(
                (e["response"]["body"]["id"] for e in streams.logged("createConversation")
                 if [m.get("id") for m in e["request"]["body"].get("members") or []] == [dana["id"]]), None))
            approve_id, approve = await streams.wait("Dana's approval card", lambda: next(
                ((e["messageId"], a) for e in streams.logged("message") if e.get("from") == "User Application"
                 and e["response"]["statusCode"] == 201
                 for card in cards_of(e["request"]["body"]) for a in actions(card, "request.approve")
                 if a["data"].get("requestId") == request_id), None))
            # ...and a read-only copy to the Approvals channel (Teams would refresh it into the approver view).
            _, channel_card = await streams.wait("the channel card", lambda: next(
                ((mid, card) for mid, card in streams.bot_messages(APPROVALS) if request_id in json.dumps(card)),
                None))
            assert not actions(channel_card, "request.approve")
            assert dana["id"] in channel_card["refresh"]["userIds"]

            # Dana clicks Approve on her card: an invoke from 29:dana in her chat, replying to that card.
            answer = await post(http, pg.url + "/_conversation/v1/invoke", {
                "name": "adaptiveCard/action", "from": {"id": dana["id"]}, "conversation": {"id": dana_chat},
                "replyToId": approve_id, "value": {"action": {"type": "Action.Execute", "title": approve["title"],
                                                              "verb": "request.approve", "data": approve["data"]}}})
            assert "Approved." in json.dumps(answer["value"]), json.dumps(answer)[:1500]

            # The role is assigned in (emulated) Entra ID through Graph, time-bound...
            async def assignment() -> list[dict[str, Any]]:
                async with http.get(graph + "/_emulator/state") as response:
                    state = await response.json()
                return [a for a in state["assignments"] if a["principalId"] == me["aadObjectId"]
                        and a["roleDefinitionId"] == GLOBAL_ADMIN]

            deadline = time.monotonic() + 30
            granted: list[dict[str, Any]] = []
            while not granted and time.monotonic() < deadline:
                granted = await assignment()
                if not granted:
                    await asyncio.sleep(0.2)
            assert granted, "no Global Administrator assignment for the requester in the Graph emulator"
            start, end = (datetime.fromisoformat(granted[0][k].rstrip("Z")) for k in ("startDateTime",
                                                                                       "endDateTime"))
            assert (end - start).total_seconds() == 30 * 60

            # ...and the requester hears about it in their chat, the channel gets the receipt.
            await streams.wait("the requester's notice", lambda: [
                card for _, card in streams.bot_messages(chat)
                if request_id in json.dumps(card) and "was approved; the access is active until" in json.dumps(card)])
            await streams.wait("the channel receipt", lambda: [
                card for _, card in streams.bot_messages(APPROVALS)
                if f"Access granted: {request_id}" in json.dumps(card)])
        finally:
            await streams.close()
    assert pg.proc.poll() is None, "the Playground died during the test:\n" + pg.problem()


@pytest.mark.slow
def test_the_playground_accepts_the_approver_tenant(tmp_path):
    node = node_or_skip()
    pg = Playground(node, tmp_path, APPROVER_CONFIG, "http://127.0.0.1:9")  # no bot needed to load the file
    try:
        pg.wait_listening()
        deadline = time.monotonic() + 20
        loaded: dict[str, Any] = {}
        while not loaded and time.monotonic() < deadline:
            assert pg.proc.poll() is None, "the Playground refused the approver tenant:\n" + pg.problem()
            try:
                with urllib.request.urlopen(pg.url + "/_internal/v1/testConfig", timeout=5) as response:
                    loaded = json.load(response)["config"]
            except OSError:
                time.sleep(0.1)
        assert loaded["currentUser"]["id"] == "29:dana", pg.problem()
    finally:
        pg.stop()
