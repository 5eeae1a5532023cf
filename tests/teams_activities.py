"""Teams activities as the bot receives them, shaped like shared/ref/fixtures/teams (fake demo-tenant ids)."""

from __future__ import annotations

import itertools
from typing import Any

from services.emulators import seed as demo
from services.emulators.botauth import DEMO_BOT_APP_ID
from services.emulators.botconnector import personal_conversation_id
from services.emulators.entra import DEMO_TENANT_ID

_ids = itertools.count(1_700_000_100_000)
BOT = {"id": f"28:{DEMO_BOT_APP_ID}", "name": "breakglass"}


def _from(alias: str) -> dict[str, Any]:
    p = demo.BY_ALIAS[alias]
    return {"id": p.mri, "name": p.display_name, "aadObjectId": p.object_id}


def personal_conversation(alias: str) -> str:
    return personal_conversation_id(DEMO_TENANT_ID, demo.BY_ALIAS[alias].mri, BOT["id"])


def _base(alias: str, service_url: str, *, conversation: str | None, tenant: str, channel: str,
          conversation_type: str = "personal") -> dict[str, Any]:
    return {
        "id": str(next(_ids)),
        "timestamp": "2026-11-23T09:00:00.000Z",
        "localTimestamp": "2026-11-23T10:00:00.000+01:00",
        "serviceUrl": service_url,
        "channelId": channel,
        "from": _from(alias),
        "conversation": {"conversationType": conversation_type, "tenantId": tenant,
                         "id": conversation or personal_conversation(alias)},
        "recipient": BOT,
        "entities": [{"locale": "en-US", "country": "US", "platform": "Web", "timezone": "Europe/Berlin",
                      "type": "clientInfo"}],
        "channelData": {"tenant": {"id": tenant}},
        "locale": "en-US",
        "localTimezone": "Europe/Berlin",
    }


def message(alias: str, text: str, service_url: str, *, conversation: str | None = None,
            tenant: str = DEMO_TENANT_ID, channel: str = "msteams") -> dict[str, Any]:
    activity = _base(alias, service_url, conversation=conversation, tenant=tenant, channel=channel)
    activity.update({"type": "message", "textFormat": "plain", "text": text})
    return activity


def invoke(alias: str, verb: str, data: dict[str, Any], service_url: str, *, reply_to_id: str = "1700000000123",
           conversation: str | None = None, tenant: str = DEMO_TENANT_ID, trigger: str = "manual",
           channel: str = "msteams") -> dict[str, Any]:
    activity = _base(alias, service_url, conversation=conversation, tenant=tenant, channel=channel)
    activity.update({"type": "invoke", "name": "adaptiveCard/action", "replyToId": reply_to_id,
                     "value": {"action": {"type": "Action.Execute", "id": f"{verb}-btn", "verb": verb,
                                          "data": data}, "trigger": trigger}})
    return activity


def legacy_submit(alias: str, value: dict[str, Any], service_url: str, *, reply_to_id: str,
                  conversation: str | None = None) -> dict[str, Any]:
    activity = _base(alias, service_url, conversation=conversation, tenant=DEMO_TENANT_ID, channel="msteams")
    activity.update({"type": "message", "replyToId": reply_to_id, "value": value})
    return activity


def bot_added_to_team(alias: str, service_url: str) -> dict[str, Any]:
    activity = _base(alias, service_url, conversation=demo.APPROVALS_CHANNEL_ID, tenant=DEMO_TENANT_ID,
                     channel="msteams", conversation_type="channel")
    activity.update({"type": "conversationUpdate", "membersAdded": [BOT],
                     "channelData": {"tenant": {"id": DEMO_TENANT_ID}, "eventType": "teamMemberAdded",
                                     "team": {"id": demo.APPROVALS_CHANNEL_ID, "name": "Identity Ops"},
                                     "settings": {"selectedChannel": {"id": demo.APPROVALS_CHANNEL_ID}}}})
    return activity
