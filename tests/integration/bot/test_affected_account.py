"""The intake card's optional "affected account" (the compromised account of a security incident), offered when a
role the requester may ask for has a runbook step acting on it; hostile text is cleaned, unknown and denylisted
accounts come back on the form, a valid one is stored and shown on the approver's card."""

from __future__ import annotations

from policies.lifecycle import State
from tests.factories import PEOPLE
from tests.integration.bot.conftest import inputs, texts
from tests.integration.bot.test_flows import intake, only_request, submit

MORGAN_TEXT = "Security Admin for 30 minutes for the on-call responder to contain the token theft, INC0012346"


async def test_the_affected_account_is_asked_checked_and_kept(teams):
    await teams.install_in_team()
    card = await intake(teams, "morgan", MORGAN_TEXT)
    assert "affected" in inputs(card)
    result = await submit(teams, "morgan", card, entitlement="security-admin", target="jordan@contoso.example",
                          duration="30", affected="nobody@contoso.example\u202e\x1b[2J")
    assert "was not found in the directory" in texts(result)
    assert "\u202e" not in str(result) and "\x1b" not in str(result)
    assert teams.product.store.by_requester(PEOPLE["morgan"].object_id) == []
    result = await submit(teams, "morgan", result, entitlement="security-admin", target="jordan@contoso.example",
                          duration="30", affected="breakglass01@contoso.example")
    assert "is on the denylist" in texts(result)
    result = await submit(teams, "morgan", result, entitlement="security-admin", target="jordan@contoso.example",
                          duration="30", affected="alex@contoso.example")
    record = only_request(teams.product, "morgan")
    assert record.affected is not None and record.affected.object_id == PEOPLE["alex"].object_id
    assert record.state in {State.APPROVED, State.PENDING_APPROVAL}
    assert "Alex Novak" in texts(result)


async def test_no_affected_account_field_for_roles_without_such_a_step(teams):
    card = await intake(teams, "alex", "Helpdesk admin for 1 hour to reset the password of the exec assistant, "
                                       "INC0012347")
    assert "affected" not in inputs(card)
