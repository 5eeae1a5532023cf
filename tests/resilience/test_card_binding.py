"""A click is bound to its card (issue 17, section 3), through the real aiohttp app and botbuilder, real Redis and
the emulators: a vote must carry the card's terms digest and reply to one of the card activities breakglass stored
for that request; anything else is refused as an out-of-date card, audited, and changes nothing. Every legitimate
copy still works: the approver's own card, the approvals channel's copy refreshed into the approver view, a card
the `pending` command sent, and Action.Submit from older clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.lifecycle import State
from tests.harness import Product, person, start_product
from tests.integration.bot.conftest import Teams, actions, card_of, texts
from tests.resilience.conftest import bulk_people, policy_file, request_for
from tests.resilience.test_approval_integrity import playing, stored
from tests.teams_activities import invoke, legacy_submit, message, personal_conversation

OUT_OF_DATE = "This card is out of date"


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url, policy_file=policy_file(tmp_path, bulk=("global-admin",)))
    yield p
    p.stop()


async def two_pending(teams: Teams) -> tuple[Any, Any]:
    product = teams.product
    await teams.install_in_team()
    await teams.post(message("dana", "help", product.service_url))  # Dana gets her cards personally
    first, second = bulk_people(product, 2)
    a, b = (request_for(product, who, seconds=1800, entitlement="global-admin",
                        justification="Rotate the leaked app secrets of the finance integration") for who in
            (first, second))
    product.run_jobs()
    return a, b


def refusals(product: Product) -> list[Any]:
    return [e for e in product.audit.events() if e.event == "action.refused"
            and e.data.get("code") == "card_out_of_date"]


async def assert_refused(teams: Teams, activity: dict[str, Any], request_id: str, clicker: str = "dana") -> None:
    product = teams.product
    before, audited = stored(product, request_id), len(refusals(product))
    card = await teams.invoke_card(activity)
    assert OUT_OF_DATE in texts(card), texts(card)
    assert stored(product, request_id) == before
    assert [e.actor for e in refusals(product)[audited:]] == [person(clicker).object_id]
    product.run_jobs()
    assert product.store.get(request_id).state is State.PENDING_APPROVAL


async def test_a_click_from_another_requests_card_is_refused(product):
    async with playing(product) as teams:
        a, b = await two_pending(teams)
        url = product.service_url
        on_a, _ = teams.card_with("dana", "request.approve", a.id)
        # From A's card activity: B's id without a digest, with B's digest, and A's digest with B's id.
        for data in ({"requestId": b.id}, {"requestId": b.id, "terms": b.terms_digest},
                     {"requestId": b.id, "terms": a.terms_digest}):
            await assert_refused(teams, invoke("dana", "request.approve", data, url, reply_to_id=on_a["id"]), b.id)
        # From B's own card without the digest.
        on_b, _ = teams.card_with("dana", "request.approve", b.id)
        await assert_refused(teams, invoke("dana", "request.approve", {"requestId": b.id}, url,
                                           reply_to_id=on_b["id"]), b.id)
        assert len(refusals(product)) == 4
        assert product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST") == []
        # A is untouched by all of it, and its own card still works.
        assert "Approved" in texts(await teams.invoke_card(teams.click("dana", "request.approve", a.id)))


async def test_every_legitimate_copy_of_the_card_still_works(product):
    async with playing(product) as teams:
        a, b = await two_pending(teams)
        url = product.service_url
        # Bo (an approver without a personal card) clicks in the approvals channel, on its refreshed copy.
        terms = {"terms": a.terms_digest}
        shown = await teams.invoke_card(teams.channel_click("bo", "request.approve", a.id, **terms))
        assert "Approved" in texts(shown)
        # A card the `pending` command sent to Dana.
        await teams.post(message("dana", "pending", url))
        pending_activity, data = teams.card_with("dana", "request.deny", b.id)
        deny = invoke("dana", "request.deny", {**data, "reason": "Use a scoped role"}, url,
                      reply_to_id=pending_activity["id"])
        assert "Denied" in texts(await teams.invoke_card(deny))
        assert product.store.get(b.id).state is State.DENIED
        assert refusals(product) == []


async def test_legacy_action_submit_is_bound_too(product):
    async with playing(product) as teams:
        a, b = await two_pending(teams)
        url = product.service_url
        on_a, data_a = teams.card_with("dana", "request.approve", a.id)
        forged = legacy_submit("dana", {"verb": "request.approve", "requestId": b.id, "terms": b.terms_digest},
                               url, reply_to_id=on_a["id"], conversation=personal_conversation("dana"))
        before = stored(product, b.id)
        status, _ = await teams.post(forged)
        assert status == 201
        assert stored(product, b.id) == before and len(refusals(product)) == 1
        shown = card_of(product.connector.activity(personal_conversation("dana"), on_a["id"]))
        assert OUT_OF_DATE in texts(shown)
        status, _ = await teams.post(legacy_submit("dana", {"verb": "request.approve", **data_a}, url,
                                                   reply_to_id=on_a["id"], conversation=personal_conversation("dana")))
        assert status == 201
        assert product.store.get(a.id).state is State.APPROVED
        assert not {v for v, _ in actions(card_of(product.connector.activity(personal_conversation("dana"),
                                                                             on_a["id"])))} & {"request.approve"}
