from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from bot.app import SERVER_LIMITS, create_app
from cards.inspect import executes
from cards.inspect import inputs as card_inputs
from cards.inspect import text as card_text
from tests.harness import Product, start_product
from tests.teams_activities import bot_added_to_team, invoke, personal_conversation

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "adaptive-card-1.5.json").read_text())
CARD_VALIDATOR = jsonschema.Draft6Validator(SCHEMA)


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url)
    yield p
    p.stop()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[TestClient]:
    """The app behind a real aiohttp server with the production parser limits."""
    server = TestServer(app)
    await server.start_server(**SERVER_LIMITS)
    async with TestClient(server) as c:
        yield c


@pytest_asyncio.fixture()
async def client(product: Product) -> AsyncIterator[TestClient]:
    async with serving(create_app(product.settings, product.services)) as c:
        yield c


class Teams:
    """Plays Teams against the bot: posts activities, reads what the bot sent to the Bot Connector emulator."""

    def __init__(self, client: TestClient, product: Product):
        self.client = client
        self.product = product

    async def post(self, activity: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        response = await self.client.post("/api/messages", json=activity, headers=headers or {})
        text = await response.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return response.status, body

    async def invoke_card(self, activity: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.post(activity)
        assert status == 200, body
        assert body["statusCode"] == 200 and body["type"] == "application/vnd.microsoft.card.adaptive", body
        assert_valid_card(body["value"])
        return body["value"]

    def sent_to(self, alias: str) -> list[dict[str, Any]]:
        return self.product.connector.activities(personal_conversation(alias))

    def cards_to(self, alias: str) -> list[dict[str, Any]]:
        return [card_of(a) for a in self.sent_to(alias) if card_of(a) is not None]

    def channel_posts(self) -> list[dict[str, Any]]:
        channel = self.product.settings.teams_approvals_channel_id or ""
        return [r["current"] for r in self.product.connector.all_activities()
                if r["conversationId"].split(";")[0] == channel]

    def card_with(self, alias: str, verb: str, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(activity, data) of the newest card in `alias`'s chat that offers `verb` for `request_id`."""
        for activity in reversed(self.sent_to(alias)):
            card = card_of(activity)
            for found, data in (actions(card) if card else []):
                if found == verb and data.get("requestId") == request_id:
                    return activity, data
        raise AssertionError(f"no card in {alias}'s chat offers {verb} for {request_id}")

    def click(self, alias: str, verb: str, request_id: str, **extra: Any) -> dict[str, Any]:
        """`alias` clicks `verb` on their newest card for the request: the invoke replies to that card's activity
        and carries the card's own data (plus the inputs in `extra`), as Teams sends it."""
        activity, data = self.card_with(alias, verb, request_id)
        return invoke(alias, verb, {**data, **extra}, self.product.service_url, reply_to_id=activity["id"])

    def channel_click(self, alias: str, verb: str, request_id: str, **data: Any) -> dict[str, Any]:
        """`alias` clicks on the approvals channel's copy of the request's card (refreshed into their view)."""
        ref = next(c for c in self.product.store.get(request_id).cards if c.audience == "channel")
        activity = invoke(alias, verb, {"requestId": request_id, **data}, self.product.service_url,
                          reply_to_id=ref.activity_id, conversation=ref.conversation_id)
        activity["conversation"]["conversationType"] = "channel"
        return activity

    async def install_in_team(self) -> None:
        status, _ = await self.post(bot_added_to_team("dana", self.product.service_url))
        assert status == 201


@pytest_asyncio.fixture()
async def teams(client: TestClient, product: Product) -> Teams:
    return Teams(client, product)


def card_of(activity: dict[str, Any]) -> dict[str, Any] | None:
    for attachment in activity.get("attachments") or []:
        if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
            return attachment["content"]
    return None


def assert_valid_card(card: dict[str, Any]) -> None:
    if card.get("msteams") == {"width": "Full"}:  # the Teams extension our cards use; the 1.5 schema forbids it
        card = {k: v for k, v in card.items() if k != "msteams"}
    errors = sorted(CARD_VALIDATOR.iter_errors(card), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def inputs(card: dict[str, Any]) -> dict[str, Any]:
    return card_inputs(card)


def actions(card: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return executes(card)


def texts(card: dict[str, Any]) -> str:
    return card_text(card)
