"""The post-use checklist of an emergency incident, ticked through the real endpoint from the card in the alerts
channel: someone not in the reviewers group is refused (audited, nothing changes, nothing noted); a click that
does not come from the checklist card is out of date; each allowed tick is audited and noted on the ServiceNow
incident; the last one closes it with a note, and the card shows who did what and when."""

from __future__ import annotations

from typing import Any

import pytest

from cards.verbs import Verb
from policies.emergency import CHECKLIST
from tests.harness import Product
from tests.integration.emergency.helpers import ago, sign_in
from tests.teams_activities import invoke

from .conftest import Teams, actions, texts


def open_incident(product: Product) -> Any:
    product.graph.set_state({"sign_ins": [sign_in(ago(product, 2), sid="si-check")]})
    [incident_id] = product.services.emergency_watch.poll().opened
    incident = product.services.emergency_store.get(incident_id)
    assert incident is not None and incident.card is not None and incident.ticket is not None
    return incident


def tick(product: Product, alias: str, incident: Any, item: str, **overrides: Any) -> dict[str, Any]:
    card = incident.card
    activity = invoke(alias, Verb.EMERGENCY_TICK, {"incidentId": incident.id, "item": item}, product.service_url,
                      reply_to_id=overrides.get("reply_to_id", card.activity_id),
                      conversation=overrides.get("conversation", card.conversation_id))
    activity["conversation"]["conversationType"] = "channel"
    return activity


def events(product: Product, name: str) -> list[Any]:
    return [e for e in product.audit.events() if e.event == name]


def notes(product: Product, number: str) -> list[str]:
    return [e["value"] for e in product.servicenow.journal(number)]


@pytest.mark.asyncio
async def test_a_tick_by_someone_not_allowed_is_refused_and_changes_nothing(teams: Teams, product: Product):
    incident = open_incident(product)
    before = product.services.emergency_store.get(incident.id)
    card = await teams.invoke_card(tick(product, "riley", incident, "reason"))
    assert "Only members of Security Operations may tick" in texts(card)
    after = product.services.emergency_store.get(incident.id)
    assert after == before and not after.ticks
    [refused] = events(product, "emergency.checklist_refused")
    assert refused.actor == "cccccccc-0000-0000-0000-000000000001" and refused.data["code"] == "not_a_reviewer"
    product.run_jobs()
    assert not [n for n in notes(product, incident.ticket.number) if "checklist item" in n]


@pytest.mark.asyncio
async def test_a_click_from_another_card_is_out_of_date(teams: Teams, product: Product):
    incident = open_incident(product)
    card = await teams.invoke_card(tick(product, "morgan", incident, "reason", reply_to_id="1700000000999"))
    assert "out of date" in texts(card)
    assert not product.services.emergency_store.get(incident.id).ticks
    assert events(product, "emergency.checklist_refused")[0].data["code"] == "card_out_of_date"


@pytest.mark.asyncio
async def test_every_tick_is_audited_and_noted_and_the_last_closes_the_incident(teams: Teams, product: Product):
    incident = open_incident(product)
    for n, (item, title) in enumerate(CHECKLIST):
        who = "morgan" if n % 2 == 0 else "jordan"
        card = await teams.invoke_card(tick(product, who, incident, item))
        assert f"{title}: {'Morgan Ellis' if who == 'morgan' else 'Jordan Reyes'}" in texts(card)
        product.run_jobs()
    # A second tick of a done item changes nothing.
    again = await teams.invoke_card(tick(product, "jordan", incident, "reason"))
    assert "Already ticked by Morgan Ellis" in texts(again)
    done = product.services.emergency_store.get(incident.id)
    assert done.complete and done.completed_at is not None
    assert [e.data["item"] for e in events(product, "emergency.checklist_ticked")] == [i for i, _ in CHECKLIST]
    assert len(events(product, "emergency.checklist_completed")) == 1
    assert len(events(product, "emergency.incident_closed")) == 1
    journal = notes(product, incident.ticket.number)
    assert len([n for n in journal if "post-use checklist item" in n]) == 4
    assert len([n for n in journal if "checklist is complete" in n]) == 1
    # Every copy of the card (the channel's) now shows who did what and when, and no button is left.
    channel_card = product.connector.activity(done.card.conversation_id, done.card.activity_id)
    content = channel_card["attachments"][0]["content"]
    assert "Checklist complete" in texts(content) and "Jordan Reyes" in texts(content)
    assert not [v for v, _ in actions(content) if v == Verb.EMERGENCY_TICK]
    assert product.services.emergency_store.unfinished() == []


@pytest.mark.asyncio
async def test_readiness_says_when_the_emergency_accounts_are_not_watched(product: Product):
    from bot.app import create_ops_app
    from services.state.queue import WorkerRoll

    from .conftest import serving

    WorkerRoll(product.runtime.redis, product.settings.key_prefix, product.settings.reconcile_interval_s).beat("w")
    product.graph.set_state({"audit_licence": "free"})
    product.services.emergency_watch.poll()
    async with serving(create_ops_app(product.services)) as ops:
        body = await (await ops.get("/readyz")).json()
        assert body["status"] == "degraded", body
        assert any(p.startswith("emergency watch: cannot run") and "P1 or P2" in p for p in body["problems"]), body
        product.graph.set_state({"audit_licence": "p2"})
        product.services.emergency_watch.poll()
        body = await (await ops.get("/readyz")).json()
        assert body["status"] == "ready", body
