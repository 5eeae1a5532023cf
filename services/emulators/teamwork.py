"""Teams proactive installation in Graph (PROTOCOL_NOTES §9): the org app catalog, a user's installed apps and
the 1:1 chat with the bot, modelled per (user, catalog id) as §9.6 describes.

- POST on a new pair installs (201, no body); on an existing pair 409; for a blocked user 403 Forbidden/AccessDenied
  (the app permission policy); an unknown catalog id 404.
- The list, filtered by ``teamsApp/externalId`` or ``teamsApp/id``, returns 0 or 1 rows; with only the ``…Self…``
  permission and a token whose app id is not the app's ``webApplicationInfo.id`` it returns [] (the trap in §9.1).
- ``…/chat`` answers 404 for ``chat_delay_s`` after the install, then the stable ``19:{bot}_{user}@unq.gbl.spaces``.

Not modelled: the ``conversationUpdate`` Teams sends the bot on install (the emulator cannot reach the bot).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .isotime import zulu_seconds

SELF = "TeamsAppInstallation.ReadWriteSelfForUser.All"
ANY_APP = ("TeamsAppInstallation.ReadWriteForUser.All", "TeamsAppInstallation.ReadForUser.All",
           "TeamsAppInstallation.ReadWriteAndConsentForUser.All")


class TeamworkError(Exception):
    def __init__(self, status: int, code: str, message: str, inner_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code


@dataclass
class TeamsApp:
    id: str  # catalog id (teamsApp.id)
    external_id: str  # the manifest id
    display_name: str
    bot_id: str
    azure_ad_app_id: str  # webApplicationInfo.id
    distribution_method: str = "organization"
    version: str = "1.0.0"
    short_description: str = "Just-in-time privileged access approvals."
    description: str = "Requests and approves time-boxed privileged access."

    def catalog_json(self) -> dict[str, Any]:
        return {"id": self.id, "externalId": self.external_id, "displayName": self.display_name,
                "distributionMethod": self.distribution_method}

    def definition_json(self, *, bot: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": base64.b64encode(f"{self.id}##{self.version}".encode()).decode(),
            "teamsAppId": self.id, "azureADAppId": self.azure_ad_app_id, "displayName": self.display_name,
            "version": self.version, "requiredResourceSpecificApplicationPermissions": [],
            "publishingState": "published", "shortDescription": self.short_description,
            "description": self.description, "lastModifiedDateTime": None, "createdBy": None}
        if bot:
            out["bot"] = {"id": self.bot_id}
        return out

    def to_json(self) -> dict[str, Any]:
        return {**self.catalog_json(), "botId": self.bot_id, "azureADAppId": self.azure_ad_app_id,
                "version": self.version}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeamsApp:
        return cls(id=data["id"], external_id=data["externalId"], display_name=data.get("displayName", ""),
                   bot_id=data["botId"], azure_ad_app_id=data.get("azureADAppId") or data["botId"],
                   distribution_method=data.get("distributionMethod", "organization"),
                   version=data.get("version", "1.0.0"))


def installation_id(user_id: str, app_id: str) -> str:
    """As in the doc samples: base64("{userId}##{teamsAppId}"); clients must treat it as opaque."""
    return base64.b64encode(f"{user_id}##{app_id}".encode()).decode()


def chat_id(bot_id: str, user_id: str) -> str:
    """The 1:1 chat id in the doc sample's shape: bot id first, then the user's (the order is not verified)."""
    return f"19:{bot_id}_{user_id}@unq.gbl.spaces"


@dataclass
class Teamwork:
    apps: dict[str, TeamsApp] = field(default_factory=dict)  # catalog id -> app
    installed: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (user id, catalog id) -> when
    blocked: set[str] = field(default_factory=set)  # user ids the app permission policy blocks the app for
    chat_delay_s: float = 0.0

    # --- state documents ---

    def to_json(self) -> dict[str, Any]:
        return {"teams_apps": [a.to_json() for a in self.apps.values()],
                "teams_installations": [{"userId": u, "teamsAppId": a, "installedAt": zulu_seconds(at)}
                                        for (u, a), at in self.installed.items()],
                "teams_blocked_users": sorted(self.blocked), "teams_chat_delay_s": self.chat_delay_s}

    def apply(self, data: dict[str, Any], now: datetime) -> None:
        """Pops the keys it owns from `data`."""
        if "teams_apps" in data:
            self.apps = {a.id.lower(): a for a in (TeamsApp.from_json(x) for x in data.pop("teams_apps"))}
        if "teams_installations" in data:
            self.installed = {(str(r["userId"]).lower(), str(r["teamsAppId"]).lower()): now
                              for r in data.pop("teams_installations")}
        if "teams_blocked_users" in data:
            self.blocked = {str(u).lower() for u in data.pop("teams_blocked_users")}
        if "teams_chat_delay_s" in data:
            self.chat_delay_s = float(data.pop("teams_chat_delay_s"))

    # --- the API ---

    def catalog(self) -> list[dict[str, Any]]:
        return [a.catalog_json() for a in self.apps.values()]

    @staticmethod
    def visible(app: TeamsApp, token_app_id: str, roles: set[str]) -> bool:
        """With only the Self permission, a token of another app than webApplicationInfo.id sees nothing."""
        self_only = SELF in roles and not roles & set(ANY_APP)
        return not (self_only and token_app_id.lower() != app.azure_ad_app_id.lower())

    def install(self, user_id: str, app_id: str, now: datetime, *, token_app_id: str, roles: set[str],
                tenant_id: str) -> None:
        app = self.apps.get(app_id.lower())
        if app is None:
            raise TeamworkError(404, "NotFound", "Not Found")
        if not self.visible(app, token_app_id, roles):
            raise TeamworkError(403, "Forbidden", f"AAD App Id '{token_app_id}' is not allowed to manage the Teams "
                                                  "App ''.")
        user = user_id.lower()
        if user in self.blocked:
            message = (f"App is blocked by app permission policy. TenantId: {tenant_id}, UserObjectId: "
                       f"{user_id}, AppId: {app.id}, AppType: Private")
            raise TeamworkError(403, "Forbidden", message, inner_code="AccessDenied")
        key = (user, app.id.lower())
        if key in self.installed:
            raise TeamworkError(409, "Conflict", "<placeholder: text not verified>")
        self.installed[key] = now

    def installations(self, user_id: str, token_app_id: str, roles: set[str]) -> list[tuple[str, TeamsApp]]:
        user = user_id.lower()
        out = []
        for (u, a), _ in self.installed.items():
            app = self.apps.get(a)
            if u == user and app is not None and self.visible(app, token_app_id, roles):
                out.append((installation_id(user_id, app.id), app))
        return out

    def chat(self, user_id: str, installation: str, now: datetime) -> str:
        user = user_id.lower()
        for (u, a), at in self.installed.items():
            app = self.apps.get(a)
            if u == user and app is not None and installation_id(user_id, app.id) == installation:
                if (now - at).total_seconds() < self.chat_delay_s:
                    raise TeamworkError(404, "NotFound", "The chat of this installation is not available yet.")
                return chat_id(app.bot_id, user)
        raise TeamworkError(404, "NotFound", f"Installation '{installation}' was not found for the user.")

    def uninstall(self, user_id: str, installation: str) -> bool:
        user = user_id.lower()
        for key in list(self.installed):
            app = self.apps.get(key[1])
            if key[0] == user and app is not None and installation_id(user_id, app.id) == installation:
                del self.installed[key]
                return True
        return False
