"""Who may see a request, through the real aiohttp app and botbuilder, real Redis and the emulators: only its
parties (the requester, the person receiving access, approvers who may act on it now) see its card; the approvals
channel sees its read-only copy; anybody else gets exactly the answer an id that does not exist gets, on every path
(card refresh, every card verb, every chat command), audited as `request.view_denied` and rate-limited per user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.lifecycle import State
from tests.harness import Product, person, start_product
from tests.integration.bot.conftest import Teams, actions, card_of, texts
from tests.integration.bot.test_flows import pending_riley_request
from tests.resilience.test_approval_integrity import playing
from tests.teams_activities import invoke, message

NOWHERE = "BG-ZZZZZZ"  # an id no request has


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url)
    yield p
    p.stop()


def secrets_of(record: Any) -> list[str]:
    """What a card of this request would tell a stranger."""
    return [record.id, record.request.justification[:40], "Riley", "Global Administrator", "INC0012347"]


def leaked(card: dict[str, Any], record: Any) -> list[str]:
    shown = json.dumps(card)
    return [s for s in secrets_of(record) if s in shown]


async def answer(teams: Teams, activity: dict[str, Any]) -> dict[str, Any]:
    return await teams.invoke_card(activity)


async def said_in_chat(teams: Teams, alias: str, text: str) -> list[dict[str, Any]]:
    before = len(teams.sent_to(alias))
    status, _ = await teams.post(message(alias, text, teams.product.service_url))
    assert status == 201
    return [card_of(a) for a in teams.sent_to(alias)[before:]]


def without_ids(value: Any, *ids: str) -> str:
    """The answer with the request id it was asked about blanked out (an unknown id is echoed nowhere)."""
    text = json.dumps(value, sort_keys=True)
    for one in ids:
        text = text.replace(one, "BG-??????")
    return text


async def test_a_stranger_gets_the_unknown_id_answer_on_every_path(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        url = product.service_url
        # Every card path: the refresh, each verb (Jordan replays a card activity of his own with Riley's id).
        for verb in ("request.refresh", "request.approve", "request.deny", "request.cancel", "grant.deactivate",
                     "grant.extend"):
            data = {"terms": record.terms_digest, "reason": "x", "minutes": "30"}
            unknown = await answer(teams, invoke("jordan", verb, {"requestId": NOWHERE, **data}, url))
            stranger = await answer(teams, invoke("jordan", verb, {"requestId": record.id, **data}, url))
            assert leaked(stranger, record) == [], (verb, texts(stranger))
            assert without_ids(stranger, record.id) == without_ids(unknown, NOWHERE), verb
        # Every chat command that names a request.
        for command in ("cancel {}", "deactivate {}", "extend {} 30"):
            unknown = await said_in_chat(teams, "jordan", command.format(NOWHERE))
            stranger = await said_in_chat(teams, "jordan", command.format(record.id))
            assert [leaked(c, record) for c in stranger] == [[]], (command, [texts(c) for c in stranger])
            assert without_ids(stranger, record.id) == without_ids(unknown, NOWHERE), command
        status = await said_in_chat(teams, "jordan", "status")
        assert [leaked(c, record) for c in status] == [[]]
        denied = [e for e in product.audit.events() if e.event == "request.view_denied"]
        assert denied and {e.actor for e in denied} == {person("jordan").object_id}
        assert record.id in {e.request_id for e in denied}
        assert product.store.get(record.id).state is State.PENDING_APPROVAL


async def test_the_parties_see_the_request_and_the_channel_its_read_only_copy(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        url = product.service_url
        mine = await answer(teams, invoke("riley", "request.refresh", {"requestId": record.id}, url))
        assert record.request.justification[:40] in json.dumps(mine)
        approver = await answer(teams, invoke("dana", "request.refresh", {"requestId": record.id}, url))
        assert {"request.approve", "request.deny"} <= {v for v, _ in actions(approver)}
        # Jordan in the approvals channel: Teams refreshes the channel's copy for him, and he gets that copy only.
        channel = await answer(teams, teams.channel_click("jordan", "request.refresh", record.id))
        assert record.id in json.dumps(channel)
        assert not {v for v, _ in actions(channel)} & {"request.approve", "request.deny", "request.cancel"}
        assert [e for e in product.audit.events() if e.event == "request.view_denied"] == []


async def test_probing_for_requests_is_rate_limited_per_user(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        url = product.service_url
        answers = []
        for n in range(60):
            probe = record.id if n % 2 else f"BG-{n:06d}"
            answers.append(texts(await answer(teams, invoke("jordan", "request.refresh", {"requestId": probe}, url))))
        assert "There is no such request." in answers[0]
        throttled = [a for a in answers if "too many" in a.lower()]
        assert len(throttled) >= 30, answers  # the product allows a burst of 20 misses, then 20 a minute
        denied = [e for e in product.audit.events() if e.event == "request.view_denied"]
        assert len(denied) <= 25, len(denied)  # audited while under the limit, then once for the throttling
        # The limit is Jordan's alone: Dana's own card still refreshes.
        approver = await answer(teams, invoke("dana", "request.refresh", {"requestId": record.id}, url))
        assert {"request.approve", "request.deny"} <= {v for v, _ in actions(approver)}
