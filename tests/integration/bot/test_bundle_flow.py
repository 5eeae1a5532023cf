"""A bundle through Teams: offered and prefilled on the intake card, one approval card and one click for every
member, and one message back naming them all."""

from __future__ import annotations

import json

from policies.lifecycle import State
from tests.integration.bot.conftest import inputs, texts
from tests.integration.bot.test_flows import intake, only_request, submit

BUNDLE_TEXT = "Need the incident responder bundle for 45 minutes to contain the token theft, INC0012347"
MEMBERS = ("Conditional Access Administrator", "User Administrator", "Helpdesk Administrator")


async def test_a_bundle_is_offered_prefilled_approved_with_one_click_and_granted_whole(teams):
    product = teams.product
    await teams.install_in_team()
    card = await intake(teams, "riley", BUNDLE_TEXT)
    assert "Bundle: Incident responder" in json.dumps(card)  # offered beside the roles
    assert inputs(card)["entitlement"] == "incident-responder"  # triage found the bundle in her own words
    result = await submit(teams, "riley", card)
    assert "Waiting for approval" in texts(result)
    record = only_request(product, "riley")
    assert record.state is State.PENDING_APPROVAL and record.decision.is_bundle
    product.run_jobs()
    dana_card = teams.cards_to("dana")[-1]
    assert all(name in texts(dana_card) for name in MEMBERS)  # one approval card names every member
    before = len(teams.sent_to("riley"))
    approved = await teams.invoke_card(teams.click("dana", "request.approve", record.id))
    assert "Approved" in texts(approved)
    product.run_jobs()
    final = product.store.get(record.id)
    assert final.state is State.ACTIVE and len(final.grants) == 3
    notices = [a.get("summary") or "" for a in teams.sent_to("riley")[before:]]
    assert len(notices) == 1 and all(name in notices[0] for name in MEMBERS)
