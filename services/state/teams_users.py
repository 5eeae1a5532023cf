"""What the bot has learned about Teams users and channels: Entra object id -> Teams id (29:...), service URL
and the 1:1 conversation. Proactive messages (approval cards, receipts) need these; they are learned from every
inbound activity and from the team roster when the bot is installed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from services.state.store import RequestStore


@dataclass(frozen=True)
class TeamsUser:
    object_id: str
    teams_id: str
    name: str = ""
    service_url: str = ""
    tenant_id: str = ""
    conversation_id: str | None = None  # the 1:1 chat with the bot, once known
    upn: str = ""


@dataclass(frozen=True)
class TeamsChannel:
    kind: str  # "approvals" or "alerts"
    service_url: str
    channel_id: str
    tenant_id: str
    team_id: str = ""
    name: str = ""


class TeamsUsers:
    def __init__(self, store: RequestStore):
        self.store = store

    def remember(self, user: TeamsUser) -> TeamsUser:
        known = self.get(user.object_id)
        merged = user
        if known is not None:
            # Keep a known 1:1 conversation when the new sighting comes from a channel.
            data = {**asdict(known), **{k: v for k, v in asdict(user).items() if v}}
            merged = TeamsUser(**data)
        if merged != known:  # every activity re-reports the sender: write only what is new
            self.store.put_doc("teams-user", user.object_id.lower(), asdict(merged))
            if merged.tenant_id and merged.service_url and merged.service_url != (known and known.service_url):
                # Teams gives its service URL (the tenant's region) with every authenticated activity; channels
                # are reached there too, whoever spoke last.
                self.store.put_doc("teams-service-url", merged.tenant_id.lower(), {"url": merged.service_url})
        return merged

    def service_url(self, tenant_id: str) -> str | None:
        """The service URL Teams last gave for the tenant, if any activity has been seen."""
        doc = self.store.get_doc("teams-service-url", tenant_id.lower()) if tenant_id else None
        return str(doc["url"]) if doc and doc.get("url") else None

    def get(self, object_id: str) -> TeamsUser | None:
        doc = self.store.get_doc("teams-user", object_id.lower())
        return TeamsUser(**doc) if doc else None

    def remember_channel(self, channel: TeamsChannel) -> None:
        self.store.put_doc("teams-channel", channel.kind, asdict(channel))

    def channel(self, kind: str) -> TeamsChannel | None:
        doc: dict[str, Any] | None = self.store.get_doc("teams-channel", kind)
        return TeamsChannel(**doc) if doc else None
