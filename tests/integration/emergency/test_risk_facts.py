"""Identity risk read from Graph (the emulator's riskyUsers, from the fixtures) as a decision fact: a risky requester
is denied under the shipped policy, a never-flagged one (404) passes as "none", and a tenant without P2 (403) is
"unknown", which the shipped policy allows and says so. The card shows the level and the rule's reason."""

from __future__ import annotations

import uuid

from cards.inspect import text as card_text
from cards.status import request_card
from policies.lifecycle import State
from services.emulators.fixture_files import response_of
from services.workflow.access import IntakeInput, Who
from tests.factories import PEOPLE
from tests.harness import Product

RILEY = PEOPLE["riley"]


def submit(product: Product):
    form = IntakeInput(entitlement="user-admin", duration_minutes=60, target="", ticket="INC0012347",
                       justification="Restore the deleted accounts of the finance team, INC0012347")
    return product.services.access.submit(Who(RILEY.object_id, RILEY.display_name), form, draft_id=uuid.uuid4().hex)


def risk_rule(record):
    return next(r for r in record.decision.rules if r.rule == "risk.requester")


def test_a_requester_at_medium_risk_is_denied_and_the_card_says_why(product: Product):
    row = {**response_of("graph/risky_user_get.http.json")[2], "id": RILEY.object_id}
    row.pop("@odata.context")
    product.graph.set_state({"risky_users": [row]})
    result = submit(product)
    record = result.record
    assert record is not None and record.state is State.DENIED
    rule = risk_rule(record)
    assert not rule.passed and "medium (atRisk)" in rule.reason
    text = card_text(request_card(record, now=product.clock.now(), viewer="requester"))
    assert "Identity risk" in text and "medium" in text


def test_never_flagged_is_none_and_passes(product: Product):
    record = submit(product).record
    assert record is not None and record.state is not State.DENIED
    rule = risk_rule(record)
    assert rule.passed and "none" in rule.reason and "never flagged" in rule.reason


def test_no_p2_licence_is_unknown_and_the_policy_decides(product: Product):
    product.graph.set_state({"audit_licence": "p1"})
    record = submit(product).record
    assert record is not None and record.state is not State.DENIED
    rule = risk_rule(record)
    assert "unknown" in rule.reason and "P2" in rule.reason and "allows" in rule.reason
    text = card_text(request_card(record, now=product.clock.now(), viewer="requester"))
    assert "Identity risk" in text and "unknown" in text
