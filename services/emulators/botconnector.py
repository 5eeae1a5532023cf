"""The Bot Connector REST API v3 the bot calls at ``serviceUrl`` (send, reply, update, create conversation, members).

Conversation ids arrive percent-encoded (``a%3A...``, ``19%3A...%40thread.tacv2%3Bmessageid%3D...``); aiohttp
decodes path parameters, so ids are stored decoded. Every activity keeps its current content plus its full
version history, so a test can assert that *every* copy of an approval card ended up showing the same outcome.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
from typing import Any

from aiohttp import web

from .base import Emulator
from .clock import Clock, NowFn
from .entra import DEMO_TENANT_ID
from .fixture_files import response_of
from .isotime import zulu_seconds
from .responses import json_response, read_json

CONTENT_TYPE = "application/json; charset=utf-8"


def _error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status, content_type=CONTENT_TYPE)


def _bad_syntax() -> web.Response:
    status, headers, body = response_of("botframework/connector_error_400_bad_syntax.http.json")
    return json_response(body, status=status, headers=headers)


def personal_conversation_id(tenant_id: str, member_id: str, bot_id: str) -> str:
    """Stable per (tenant, user, bot), like Teams: creating the 1:1 again returns the same conversation."""
    digest = hashlib.sha256(f"{tenant_id}|{member_id}|{bot_id}".encode()).digest()
    return "a:1" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _base_thread(conversation_id: str) -> str:
    return conversation_id.split(";messageid=", 1)[0]


class BotConnectorEmulator(Emulator):
    name = "botconnector"

    def __init__(
        self,
        *,
        require_auth: bool = False,
        tenant_id: str = DEMO_TENANT_ID,
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        # Default off: locally the product runs botbuilder auth-disabled and sends no Authorization header.
        self._require_auth = require_auth
        self.tenant_id = tenant_id
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.require_auth = self._require_auth
        self.members: dict[str, dict[str, Any]] = {}  # MRI -> TeamsChannelAccount
        self.conversations: dict[str, dict[str, Any]] = {}
        # Teams activity ids are millisecond timestamps; start from "now" and count up so ids stay unique.
        self._activity_ids = itertools.count(int(self.clock.now().timestamp() * 1000))

    def _snapshot(self) -> dict[str, Any]:
        return {
            "require_auth": self.require_auth,
            "members": list(self.members.values()),
            "conversations": [
                {**{k: v for k, v in c.items() if k != "activities"}, "activities": list(c["activities"].values())}
                for c in self.conversations.values()
            ],
        }

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        if "require_auth" in data:
            self.require_auth = bool(data.pop("require_auth"))
        if "members" in data:
            self.members = {}
            for member in data.pop("members"):
                self.add_member(member)
        if "conversations" in data:
            self.conversations = {}
            for conversation in data.pop("conversations"):
                self._conversation(
                    conversation["id"], conversation.get("conversationType", "personal"),
                    members=conversation.get("members", []), tenant_id=conversation.get("tenantId"),
                )
        super()._apply_state(data)

    def _conversation(
        self, conversation_id: str, kind: str = "personal", *, members: list[str] | None = None,
        tenant_id: str | None = None,
    ) -> dict[str, Any]:
        if conversation_id not in self.conversations:
            self.conversations[conversation_id] = {
                "id": conversation_id, "conversationType": kind, "tenantId": tenant_id or self.tenant_id,
                "members": list(members or []), "activities": {},
            }
        return self.conversations[conversation_id]

    def _record(self, conversation: dict[str, Any], activity: dict[str, Any], *, reply_to: str | None) -> str:
        activity_id = str(next(self._activity_ids))
        stored = {**copy.deepcopy(activity), "id": activity_id}
        conversation["activities"][activity_id] = {
            "id": activity_id, "replyToId": reply_to or activity.get("replyToId"), "deleted": False,
            "current": stored,
            "versions": [{"op": "create", "at": zulu_seconds(self.clock.now()), "activity": copy.deepcopy(stored)}],
        }
        return activity_id

    def _find_activity(self, conversation_id: str, activity_id: str) -> dict[str, Any] | None:
        """Exact conversation first; a channel root post may be addressed with or without ``;messageid=``."""
        exact = self.conversations.get(conversation_id)
        if exact and activity_id in exact["activities"]:
            return exact["activities"][activity_id]
        base = _base_thread(conversation_id)
        for conversation in self.conversations.values():
            if _base_thread(conversation["id"]) == base and activity_id in conversation["activities"]:
                return conversation["activities"][activity_id]
        return None

    # ----- Python API ------------------------------------------------------------------------------------
    def add_member(self, account: dict[str, Any]) -> None:
        """A TeamsChannelAccount: id (29:...), name, aadObjectId, userPrincipalName, email, tenantId."""
        with self.lock:
            member = {"tenantId": self.tenant_id, "userRole": "user", **copy.deepcopy(account)}
            self.members[member["id"]] = member

    def activities(self, conversation_id: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Current content of every activity the bot posted to a conversation, oldest first."""
        with self.lock:
            conversation = self.conversations.get(conversation_id)
            if conversation is None:
                return []
            return [copy.deepcopy(a["current"]) for a in conversation["activities"].values()
                    if include_deleted or not a["deleted"]]

    def activity(self, conversation_id: str, activity_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._find_activity(conversation_id, activity_id)
            return copy.deepcopy(found["current"]) if found else None

    def versions(self, conversation_id: str, activity_id: str) -> list[dict[str, Any]]:
        with self.lock:
            found = self._find_activity(conversation_id, activity_id)
            return copy.deepcopy(found["versions"]) if found else []

    def all_activities(self) -> list[dict[str, Any]]:
        """Every stored activity record across conversations: {conversationId, id, current, versions, ...}."""
        with self.lock:
            return [
                {"conversationId": cid, **copy.deepcopy(record)}
                for cid, conversation in self.conversations.items()
                for record in conversation["activities"].values()
            ]

    # ----- pipeline hooks --------------------------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        if not self.require_auth or "/v3/" not in request.path:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return json_response({"message": "Authorization has been denied for this request."}, status=401,
                                 content_type=CONTENT_TYPE)
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        if status == 400:
            _, headers, body = response_of("botframework/connector_error_400_bad_syntax.http.json")
            return headers, body
        headers = {"Content-Type": CONTENT_TYPE}
        if status == 429:
            headers["Retry-After"] = "1"
        codes = {403: "Forbidden", 404: "NotFound", 412: "PreconditionFailed", 429: "TooManyRequests",
                 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        return headers, {"error": {"code": codes.get(status, "Error"), "message": f"Injected HTTP {status}"}}

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        # serviceUrl may carry a path (".../emea/", the Playground's ".../_connector/"): accept any prefix.
        v3 = "/{_prefix:(?:[A-Za-z0-9_.~-]+/)*}v3/conversations"
        r = app.router
        r.add_post(v3, self._h_create_conversation)
        r.add_post(v3 + "/{cid}/activities", self._h_send)
        r.add_post(v3 + "/{cid}/activities/{aid}", self._h_send)
        r.add_put(v3 + "/{cid}/activities/{aid}", self._h_update)
        r.add_delete(v3 + "/{cid}/activities/{aid}", self._h_delete)
        r.add_get(v3 + "/{cid}/members", self._h_members)
        r.add_get(v3 + "/{cid}/pagedmembers", self._h_paged_members)
        r.add_get(v3 + "/{cid}/members/{uid}", self._h_member)

    async def _h_send(self, request: web.Request) -> web.Response:
        activity, problem = await _activity_body(request)
        if problem:
            return problem
        conversation_id = request.match_info["cid"]
        reply_to = request.match_info.get("aid")
        with self.lock:
            conversation = self._conversation(conversation_id, _kind_of(conversation_id))
            activity_id = self._record(conversation, activity, reply_to=reply_to)
        # Replies answered 200 in the captured SDK exchange; a plain send is a 201 Created.
        return json_response({"id": activity_id}, status=200 if reply_to else 201, content_type=CONTENT_TYPE)

    async def _h_update(self, request: web.Request) -> web.Response:
        activity, problem = await _activity_body(request)
        if problem:
            return problem
        conversation_id, activity_id = request.match_info["cid"], request.match_info["aid"]
        with self.lock:
            record = self._find_activity(conversation_id, activity_id)
            if record is None:
                return _error(404, "ActivityNotFound", f"Activity {activity_id} not found in the conversation.")
            stored = {**copy.deepcopy(activity), "id": activity_id}
            record["current"] = stored
            record["deleted"] = False
            record["versions"].append({"op": "update", "at": zulu_seconds(self.clock.now()),
                                       "activity": copy.deepcopy(stored)})
        return json_response({"id": activity_id}, content_type=CONTENT_TYPE)

    async def _h_delete(self, request: web.Request) -> web.Response:
        conversation_id, activity_id = request.match_info["cid"], request.match_info["aid"]
        with self.lock:
            record = self._find_activity(conversation_id, activity_id)
            if record is None:
                return _error(404, "ActivityNotFound", f"Activity {activity_id} not found in the conversation.")
            record["deleted"] = True
            record["versions"].append({"op": "delete", "at": zulu_seconds(self.clock.now()), "activity": None})
        return web.Response(status=200)

    async def _h_create_conversation(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
        except ValueError:
            return _bad_syntax()
        if not isinstance(body, dict):
            return _bad_syntax()
        channel_data = body.get("channelData") or {}
        channel_id = (channel_data.get("channel") or {}).get("id")
        tenant_id = body.get("tenantId") or (channel_data.get("tenant") or {}).get("id") or self.tenant_id
        activity = body.get("activity")
        with self.lock:
            if body.get("isGroup") and channel_id:
                if not isinstance(activity, dict):
                    return _bad_syntax()
                activity_id = str(next(self._activity_ids))
                conversation_id = f"{channel_id};messageid={activity_id}"
                conversation = self._conversation(conversation_id, "channel", tenant_id=tenant_id)
                stored = {**copy.deepcopy(activity), "id": activity_id}
                conversation["activities"][activity_id] = {
                    "id": activity_id, "replyToId": None, "deleted": False, "current": stored,
                    "versions": [{"op": "create", "at": zulu_seconds(self.clock.now()),
                                  "activity": copy.deepcopy(stored)}],
                }
                return json_response({"id": conversation_id, "activityId": activity_id}, status=201,
                                     content_type=CONTENT_TYPE)
            members = body.get("members") or []
            if len(members) != 1 or not isinstance(members[0], dict) or not members[0].get("id"):
                return _bad_syntax()
            member_id = members[0]["id"]
            bot_id = (body.get("bot") or {}).get("id", "")
            conversation_id = next(
                (c["id"] for c in self.conversations.values()
                 if c["conversationType"] == "personal" and c["members"] == [member_id]),
                personal_conversation_id(tenant_id, member_id, bot_id),
            )
            conversation = self._conversation(conversation_id, "personal", members=[member_id], tenant_id=tenant_id)
            response: dict[str, Any] = {"id": conversation_id}
            if isinstance(activity, dict):
                response["activityId"] = self._record(conversation, activity, reply_to=None)
        # The personal-conversation doc sample answers 200; the captured channel post answered 201.
        return json_response(response, status=200, content_type=CONTENT_TYPE)

    def _roster(self, conversation_id: str) -> list[dict[str, Any]]:
        conversation = self.conversations.get(conversation_id)
        if conversation and conversation["members"]:
            return [self.members[m] for m in conversation["members"] if m in self.members]
        return list(self.members.values())

    async def _h_members(self, request: web.Request) -> web.Response:
        with self.lock:
            return json_response(self._roster(request.match_info["cid"]), content_type=CONTENT_TYPE)

    async def _h_paged_members(self, request: web.Request) -> web.Response:
        with self.lock:
            members = self._roster(request.match_info["cid"])
        return json_response({"members": members, "continuationToken": None}, content_type=CONTENT_TYPE)

    async def _h_member(self, request: web.Request) -> web.Response:
        user_id = request.match_info["uid"]
        with self.lock:
            # Teams accepts the MRI (29:...) or the AAD object id here.
            member = next((m for m in self.members.values()
                           if user_id in (m.get("id"), m.get("aadObjectId"))), None)
        if member is None:
            return _error(404, "MemberNotFoundInConversation", "The member was not found in the conversation.")
        return json_response(member, content_type=CONTENT_TYPE)


def _kind_of(conversation_id: str) -> str:
    if conversation_id.endswith("@unq.gbl.spaces"):
        # The 1:1 chat id Graph returns for an app installed for a user (PROTOCOL_NOTES §9.4), used as the
        # conversation id the way Company Communicator does.
        return "personal"
    if conversation_id.startswith("19:"):
        # Team channels are @thread.tacv2 (or legacy @thread.skype); group chats are @thread.v2.
        return "channel" if ("@thread.tacv2" in conversation_id or "@thread.skype" in conversation_id) else "groupChat"
    return "personal"


async def _activity_body(request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
    try:
        body = await read_json(request)
    except ValueError:
        return {}, _error(400, "BadArgument", "The activity is not valid JSON.")
    if not isinstance(body, dict):
        return {}, _error(400, "BadArgument", "The activity must be a JSON object.")
    return body, None
