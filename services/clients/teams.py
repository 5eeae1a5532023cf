"""Proactive messaging through the Bot Connector REST API v3 at the tenant's `serviceUrl` (PROTOCOL_NOTES §3).

Conversation and activity ids are percent-encoded in paths the way botbuilder does it (`quote(id, safe="")`:
":" -> %3A, ";" -> %3B, "@" -> %40, "=" -> %3D); `serviceUrl` may or may not end with "/". Outbound calls carry
a Bot Framework token for the bot's app registration (msal client credentials, scope
https://api.botframework.com/.default, authority /{tenant} for SingleTenant bots), shared through Redis like the
Graph token; in local auth-disabled mode (development, no MicrosoftAppId) no Authorization header is sent, which
is what botbuilder does. 429/5xx are retried honouring Retry-After; errors become `TeamsError(status, code, msg)`
with the Bot Connector error's code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import redis
import requests

from services.clients.http import BearerAuth, HttpClient, RetryPolicy, UpstreamError
from services.clients.tokens import TokenProvider
from services.ports import TeamsError

if TYPE_CHECKING:
    from services.settings import Settings

JSON_UTF8 = "application/json; charset=utf-8"


def encode_id(value: str) -> str:
    return quote(value, safe="")


def teams_error(exc: UpstreamError) -> TeamsError:
    """status 0 means there was no HTTP response (unreachable, timed out, or no token could be obtained)."""
    message = exc.message or exc.kind
    if exc.attempts > 1:
        message += f" (after {exc.attempts} attempts)"
    code = exc.code or ("" if exc.status else exc.kind.capitalize())
    return TeamsError(exc.status or 0, code, message)


class TeamsClient:
    """`services.ports.Teams` over the Bot Connector REST API."""

    def __init__(self, *, app_id: str = "", tokens: Any = None, timeout: float = 15.0,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep):
        self.app_id = app_id
        self.tokens = tokens
        self.http = HttpClient("teams", timeout=timeout, retry=retry,
                               auth=BearerAuth(tokens) if tokens is not None else None,
                               headers={"Content-Type": JSON_UTF8}, sleep=sleep)

    @staticmethod
    def _url(service_url: str, *segments: str) -> str:
        return service_url.rstrip("/") + "/v3/conversations" + "".join("/" + s for s in segments)

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        try:
            response: requests.Response = self.http.request(method, url, json=body)
        except UpstreamError as exc:
            raise teams_error(exc) from None
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {}

    # --- Teams port ---

    def send(self, service_url: str, conversation_id: str, activity: dict[str, Any]) -> str:
        url = self._url(service_url, encode_id(conversation_id), "activities")
        return str(self._call("POST", url, activity).get("id") or "")

    def reply(self, service_url: str, conversation_id: str, reply_to_id: str, activity: dict[str, Any]) -> str:
        url = self._url(service_url, encode_id(conversation_id), "activities", encode_id(reply_to_id))
        return str(self._call("POST", url, {**activity, "replyToId": activity.get("replyToId") or reply_to_id})
                   .get("id") or "")

    def update(self, service_url: str, conversation_id: str, activity_id: str, activity: dict[str, Any]) -> None:
        url = self._url(service_url, encode_id(conversation_id), "activities", encode_id(activity_id))
        self._call("PUT", url, {**activity, "id": activity_id})

    def members(self, service_url: str, conversation_id: str) -> list[dict[str, Any]]:
        body = self._call("GET", self._url(service_url, encode_id(conversation_id), "members"))
        return list(body) if isinstance(body, list) else list(body.get("members") or [])

    def create_personal(self, service_url: str, user_id: str, tenant_id: str) -> str:
        body = {"bot": {"id": f"28:{self.app_id}"}, "members": [{"id": user_id}], "isGroup": False,
                "tenantId": tenant_id, "channelData": {"tenant": {"id": tenant_id}}}
        conversation_id = self._call("POST", self._url(service_url), body).get("id")
        if not conversation_id:
            raise TeamsError(502, "BadResponse", "create conversation returned no id")
        return str(conversation_id)

    def post_to_channel(self, service_url: str, channel_id: str, activity: dict[str, Any],
                        tenant_id: str) -> tuple[str, str]:
        body = {"isGroup": True, "activity": activity,
                "channelData": {"channel": {"id": channel_id}, "tenant": {"id": tenant_id}}}
        result = self._call("POST", self._url(service_url), body)
        conversation_id, activity_id = result.get("id"), result.get("activityId")
        if not conversation_id:
            raise TeamsError(502, "BadResponse", "create conversation returned no id")
        if not activity_id:  # older services answer only the thread id: "19:...;messageid=<activity id>"
            activity_id = str(conversation_id).partition(";messageid=")[2]
        return str(conversation_id), str(activity_id)


def build_teams(settings: Settings, redis_client: redis.Redis | None = None) -> TeamsClient:
    """Pass the runtime's Redis client so the Bot Framework token is shared by every process."""
    retry = RetryPolicy.from_settings(settings)
    if settings.auth_disabled:
        return TeamsClient(app_id=settings.app_id, tokens=None, timeout=settings.teams_timeout_s, retry=retry)
    return TeamsClient(app_id=settings.app_id, tokens=TokenProvider.for_bot(settings, redis_client),
                       timeout=settings.teams_timeout_s, retry=retry)
