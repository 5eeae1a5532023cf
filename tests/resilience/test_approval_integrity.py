"""Approval integrity against the real aiohttp app and botbuilder, real Redis and the emulators (jobs in-process:
these scenarios are about logic, not processes). Nobody approves who may not; a refused click changes nothing and
is audited with the clicker's object id; races and Teams' retries end in exactly one outcome and one Graph write;
hostile text never becomes a link."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from cards.text import BIDI_CONTROLS, ZERO_WIDTH
from policies.lifecycle import State
from tests.harness import Product, person, start_product
from tests.integration.bot.conftest import Teams, actions, card_of, serving, texts
from tests.integration.bot.test_flows import RILEY_TEXT, intake, pending_riley_request
from tests.integration.bot.test_flows import submit as submit_card
from tests.resilience.conftest import bulk_people, policy_file, request_for
from tests.teams_activities import invoke, message
from tests.unit.cards.helpers import find_links

REFUSALS = {"approval.refused", "action.refused", "request.view_denied"}


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    # The race below has two approvers click 100 times each in seconds, far past a person's rate: no limit here
    # (tests/resilience/test_flood.py covers it).
    p = start_product(tmp_path, redis_client, redis_url, policy_file=policy_file(tmp_path, bulk=("global-admin",)),
                      user_rate_per_min=0)
    yield p
    p.stop()


@asynccontextmanager
async def playing(product: Product) -> AsyncIterator[Teams]:
    async with serving(create_app(product.settings, product.services)) as client:
        yield Teams(client, product)


def stored(product: Product, request_id: str) -> bytes:
    """The request exactly as it is in Redis: "state unchanged" means these bytes did not change."""
    raw = product.runtime.redis.get(product.store.keys.request(request_id))
    assert raw is not None
    return bytes(raw)


def refusals(product: Product) -> list[Any]:
    return [e for e in product.audit.events() if e.event in REFUSALS]


async def refused(teams: Teams, record_id: str, activity: dict[str, Any], clicker: str, why: str) -> None:
    """Click, then check: nothing approved, the stored request byte-for-byte unchanged, the refusal audited with
    the clicker's object id."""
    product = teams.product
    before, audited = stored(product, record_id), len(refusals(product))
    card = await teams.invoke_card(activity)
    assert why in texts(card), texts(card)
    assert stored(product, record_id) == before
    new = refusals(product)[audited:]
    assert [e.actor for e in new] == [person(clicker).object_id], new
    product.run_jobs()
    assert product.store.get(record_id).state is State.PENDING_APPROVAL
    assert product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST") == []


def approve_data(teams: Teams, record_id: str) -> dict[str, Any]:
    card = next(c for c in reversed(teams.cards_to("dana")) if record_id in json.dumps(c))
    return next(d for v, d in actions(card) if v == "request.approve")


def dana_clicks(teams: Teams, record_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Dana clicks Approve on her own card of the request, sending `data` (forged or not)."""
    activity, _ = teams.card_with("dana", "request.approve", record_id)
    return invoke("dana", "request.approve", data, teams.product.service_url, reply_to_id=activity["id"])


async def test_self_approval_non_approver_and_spoofed_name_are_refused(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        data = approve_data(teams, record.id)
        url = product.service_url
        mine = next(c for c in product.store.get(record.id).cards if c.audience == "requester")
        await refused(teams, record.id, invoke("riley", "request.approve", data, url, reply_to_id=mine.activity_id),
                      "riley", "cannot approve or deny your own request")
        # Jordan, on the channel's copy he can see: refused by name; anywhere else: the unknown-id answer.
        await refused(teams, record.id, teams.channel_click("jordan", "request.approve", record.id, **data),
                      "jordan", "not an approver")
        await refused(teams, record.id, invoke("jordan", "request.approve", data, url), "jordan",
                      "There is no such request.")
        spoofed = teams.channel_click("jordan", "request.approve", record.id, **data)
        spoofed["from"]["name"] = "Dana Whitfield"  # Dana's name, Jordan's object id
        await refused(teams, record.id, spoofed, "jordan", "not an approver")
        assert [e.data.get("clicker_name") for e in refusals(product)][-1] == "Dana Whitfield"


async def test_an_approver_removed_from_the_policy_after_the_card_went_out_is_refused(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        data = approve_data(teams, record.id)  # Dana holds a card with working buttons ...
        policy_file(product.settings.policy_file.parent, bulk=("global-admin",), path=product.settings.policy_file,
                    drop_approver=person("dana").object_id)  # ... and is taken out of the policy
        await refused(teams, record.id, dana_clicks(teams, record.id, data), "dana",
                      "There is no such request.")  # no longer an approver, not a party: she sees nothing


@pytest.mark.parametrize("forged,why", [
    ({"requestId": "BG-ZZZZZZ"}, "no such request"),
    ({"requestId": "../../etc/passwd", "state": "approved"}, "does not refer to a valid request"),
    ({"requestId": ""}, "does not refer to a valid request"),
    ({"terms": "0" * 16, "entitlement": "helpdesk-admin", "duration": 1, "approved": True},
     "request changed since this card was sent"),
    ({"target": "cccccccc-0000-0000-0000-000000000005", "quorum": 0}, "card's data was altered"),
])
async def test_forged_request_ids_and_altered_card_fields_approve_nothing(product, forged, why):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        data = {**approve_data(teams, record.id), **forged}
        await refused(teams, record.id, dana_clicks(teams, record.id, data), "dana", why)


async def test_a_click_after_the_approval_window_is_refused(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        data = approve_data(teams, record.id)
        product.advance(61 * 60)  # past the 60-minute window; the reconciler has not run yet
        await refused(teams, record.id, dana_clicks(teams, record.id, data), "dana",
                      "approval window for this request has closed")


async def test_the_same_approver_twice_under_quorum_2_does_not_approve(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, policy_file=policy_file(tmp_path, quorum=2))
    try:
        async with playing(product) as teams:
            record = await pending_riley_request(teams)
            data = approve_data(teams, record.id)
            first = await teams.invoke_card(dana_clicks(teams, record.id, data))
            assert "Approval recorded (1 of 2)" in texts(first)
            again = dana_clicks(teams, record.id, data)  # a new click, not a retry
            await refused(teams, record.id, again, "dana", "already voted")
            assert len(product.store.get(record.id).approvals) == 1
    finally:
        product.stop()


@pytest.mark.slow
async def test_approve_and_deny_racing_100_times_end_in_exactly_one_outcome(product):
    people = bulk_people(product, 100)
    async with playing(product) as teams:
        await teams.install_in_team()
        for alias in ("dana", "bo"):  # both approvers have talked to the bot: both get working cards
            await teams.post(message(alias, "help", product.service_url))
        records = [request_for(product, who, seconds=1800, entitlement="global-admin",
                               justification="Rotate the leaked app secrets of the finance integration")
                   for who in people]
        product.run_jobs()  # approval cards to Dana and the channel
        replies = {}
        for record in records:
            approve = teams.click("dana", "request.approve", record.id)
            deny = teams.channel_click("bo", "request.deny", record.id, terms=record.terms_digest,
                                       reason="Use a scoped role instead")
            replies[record.id] = await asyncio.gather(teams.post(approve), teams.post(deny))
        product.run_jobs()
        outcomes = {State.ACTIVE: 0, State.DENIED: 0}
        for record in records:
            final = product.store.get(record.id)
            assert final.state in outcomes, final.state
            outcomes[final.state] += 1
            decided = [t.to_state for t in final.history if t.to_state in {"approved", "denied"}]
            assert len(decided) == 1 and len(final.approvals) == 1  # exactly one terminal decision
            writes = [c for c in product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST")
                      if record.id in c.body.get("justification", "")]
            assert len(writes) == (1 if final.state is State.ACTIVE else 0)
            word = "Approved" if final.state is State.ACTIVE else "Denied"
            assert len(final.cards) >= 2
            for ref in final.cards:  # every copy of the card shows the same outcome, and no buttons any more
                shown = card_of(product.connector.activity(ref.conversation_id, ref.activity_id))
                assert word in texts(shown), (ref.audience, texts(shown))
                assert not {v for v, _ in actions(shown)} & {"request.approve", "request.deny"}
            for status, body in replies[record.id]:  # both clickers were told the one outcome
                assert status == 200 and body["statusCode"] == 200
                said = texts(body["value"])
                assert word in said or word.lower() in said, said
        assert outcomes[State.ACTIVE] and outcomes[State.DENIED], outcomes  # the race really went both ways
        assert {i["principalId"] for i in product.graph.instances()} <= {w.object_id for w in people}
        assert len(product.graph.instances()) == outcomes[State.ACTIVE]


async def test_the_same_approval_delivered_three_times_makes_one_transition_and_one_graph_write(product):
    async with playing(product) as teams:
        record = await pending_riley_request(teams)
        activity = teams.click("dana", "request.approve", record.id)
        replies = await asyncio.gather(*(teams.post(activity) for _ in range(3)))  # Teams retried the delivery
        assert all(status == 200 for status, _ in replies)
        product.run_jobs()
        final = product.store.get(record.id)
        assert final.state is State.ACTIVE
        assert [t.event for t in final.history].count("approved") == 1 and len(final.approvals) == 1
        assert len(product.graph.calls.list(path="roleAssignmentScheduleRequests", method="POST")) == 1
        assert len([e for e in product.audit.events() if e.event == "request.approved"]) == 1


HOSTILE = [
    "[APPROVED](https://evil.example/approve) by the CISO, INC0012347",
    "![logo](https://evil.example/pixel.png) restore the finance accounts, INC0012347",
    "Restore the deleted finance accounts \u202egnp.exe\u202c urgently, INC0012347",
    "Restore the del\u200beted finance acc\u200bounts www.evil.example/x mailto:ceo@evil.example, INC0012347",
    "<a href='https://evil.example'>click</a> [x][1] {{DATE(x)}} restore accounts, INC0012347",
    "Restore the deleted finance accounts, INC0012347 " + "[a](https://evil.example) " * 4000,  # ~100 KB
]


def every_card(product: Product, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Every version of every card the bot ever posted or updated, plus the invoke replies."""
    cards = [card_of(v["activity"]) for a in product.connector.all_activities() for v in a["versions"]]
    return [c for c in cards if c is not None] + list(extra)


@pytest.mark.parametrize("payload", HOSTILE, ids=["link", "image", "bidi", "zero-width", "html", "100KB"])
async def test_phishing_payloads_in_the_justification_are_inert_in_every_card(product, payload):
    async with playing(product) as teams:
        await teams.install_in_team()
        await teams.post(message("dana", "help", product.service_url))
        card = await intake(teams, "riley", RILEY_TEXT)
        result = await submit_card(teams, "riley", card, justification=payload)
        replies = [card, result]
        record = product.store.by_requester(person("riley").object_id)
        assert bool(record) == (len(payload) <= 2000)  # the policy's justification limit
        if record:  # accepted: the approval round trip, the grant and every receipt carry the text
            product.run_jobs()
            replies.append(await teams.invoke_card(teams.click("dana", "request.approve", record[0].id)))
            product.run_jobs()
            assert product.store.get(record[0].id).state is State.ACTIVE
        else:  # rejected on the form, with the reason
            assert "Please fix" in texts(result)
        cards = every_card(product, *replies)
        assert len(cards) >= 3
        for one in cards:
            assert find_links(one) == [], find_links(one)[:3]
            assert not set(json.dumps(one, ensure_ascii=False)) & (BIDI_CONTROLS | ZERO_WIDTH)
        assert "https://evil" not in "\n".join(texts(without_inputs(c)) for c in cards)


def without_inputs(node: Any) -> Any:
    """A card minus its input boxes (where a person's own text is put back as typed, never rendered as markdown)."""
    if isinstance(node, dict):
        return {k: without_inputs(v) for k, v in node.items() if not str(node.get("type", "")).startswith("Input.")}
    if isinstance(node, list):
        return [without_inputs(v) for v in node]
    return node
