"""Sign-in and directory-audit rows from the fixtures, re-dated and re-addressed for the emergency account; what
the product sent to the Bot Connector and ServiceNow emulators."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from services.emulators.fixture_files import response_of
from tests.factories import PEOPLE
from tests.harness import Product

EA = PEOPLE["breakglass"]
PAGE1 = response_of("graph/signins_list_filter_user_page1.http.json")[2]["value"]
AUDIT = response_of("graph/directory_audits_filter_user_window.http.json")[2]["value"][0]


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.1234567Z")


def sign_in(at: datetime, *, ok: bool = True, sid: str | None = None, user: str = EA.object_id,
            **extra: Any) -> dict[str, Any]:
    row = dict(PAGE1[0] if ok else PAGE1[1])
    row.update(id=sid or str(uuid.uuid4()), createdDateTime=stamp(at), userId=user, userPrincipalName=EA.upn,
               userDisplayName=EA.display_name, appDisplayName="Azure Portal", **extra)
    return row


def action(at: datetime, n: int, user: str = EA.object_id) -> dict[str, Any]:
    return {**AUDIT, "id": f"Directory_EA_{n}", "activityDateTime": stamp(at),
            "initiatedBy": {"app": None, "user": {**AUDIT["initiatedBy"]["user"], "id": user}}}


def ago(product: Product, minutes: float) -> datetime:
    return product.clock.now() - timedelta(minutes=minutes)


def channel_cards(product: Product) -> list[dict[str, Any]]:
    """Every card the bot posted or updated in the approvals/alerts channel (current content)."""
    channel = product.settings.teams_approvals_channel_id or ""
    out = []
    for record in product.connector.all_activities():
        if record["conversationId"].split(";")[0] == channel:
            for attachment in record["current"].get("attachments") or []:
                out.append({"id": record["id"], "conversationId": record["conversationId"],
                            "card": attachment.get("content") or {}})
    return out


def personal_cards_to(product: Product, object_id: str) -> list[dict[str, Any]]:
    out = []
    for record in product.connector.all_activities():
        if object_id in record["conversationId"] or record["conversationId"].endswith(object_id):
            out += [a.get("content") or {} for a in record["current"].get("attachments") or []]
    return out


def created_incidents(product: Product) -> list[dict[str, str]]:
    return list(product.servicenow.state()["created_incidents"])
