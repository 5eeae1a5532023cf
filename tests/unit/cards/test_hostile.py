"""Untrusted text in every free-text field: no card may carry a link, an invisible character or unbounded text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cards.approval import approval_base_card, approval_card, decided_card
from cards.intake import IntakeForm, intake_card
from cards.lists import help_card, message_card, requests_list_card
from cards.receipt import alert_card, grant_receipt_card
from cards.status import request_card
from policies.lifecycle import State
from policies.model import Approval, Decision, Effect, RuleResult, TicketFacts, Verdict
from policies.record import RequestRecord
from tests.unit.cards.factory import APPROVER, INTAKE_CHOICES, MRI, NOW, make_decision, make_record, make_request
from tests.unit.cards.helpers import all_text, check_card, facts, find_links, inputs

HOSTILE = "[APPROVED](https://evil.example) ![x](https://evil.example/p.png) \u202egnp.exe \u200b<b>hi</b>"
FILLER = ("Lorem ipsum [click](https://evil.example/x) www.evil.com mailto:x@evil.com \u2066 {{DATE(x)}} " * 2000)
HUGE = HOSTILE + " " + FILLER[:100_000]
SHORT = HOSTILE


def hostile_decision() -> Decision:
    base = make_decision()
    return base.model_copy(update={
        "entitlement_name": SHORT,
        "rules": (*base.rules, RuleResult(rule="ticket.reference", passed=False, effect=Effect.APPROVAL,
                                          reason=f"{SHORT!r} is not a recognised ticket number.")),
        "hints": (HUGE,),
        "flags": (SHORT,),
    })


def hostile_record(state: State) -> RequestRecord:
    request = make_request(justification=HUGE, ticket=SHORT, target="aaaaaaaa-0000-0000-0000-000000000099",
                           extends=SHORT if state is State.APPLIED else None)
    record = make_record(state, request=request, decision=hostile_decision())
    votes = tuple(v.model_copy(update={"approver_name": SHORT, "reason": HUGE}) for v in record.approvals)
    return record.model_copy(update={
        "requester_name": SHORT, "target_name": SHORT, "target_upn": SHORT, "approvals": votes,
        "failure": HUGE, "end_reason": HUGE,
        "ticket_facts": TicketFacts(number=SHORT, short_description=HUGE, state=SHORT),
    })


CARDS: dict[str, Callable[[RequestRecord], dict[str, Any]]] = {
    "requester": lambda r: request_card(r, now=NOW, viewer="requester", approver_ids=[MRI]),
    "approver": lambda r: approval_card(r, NOW, [MRI]),
    "base": lambda r: approval_base_card(r, NOW, [MRI]),
    "decided": lambda r: decided_card(r, NOW),
    "receipt": lambda r: grant_receipt_card(r, NOW, HUGE),
    "list": lambda r: requests_list_card(SHORT, [r] * 30, NOW, SHORT),
}


@pytest.mark.parametrize("state", list(State), ids=str)
@pytest.mark.parametrize("name", list(CARDS))
def test_hostile_text_renders_inert_in_every_card_and_state(name: str, state: State) -> None:
    card = CARDS[name](hostile_record(state))
    check_card(card)  # schema-valid, no links, no bidi/zero-width, under the Teams size limit
    blob = json.dumps(card, ensure_ascii=False)
    assert "<b>" not in blob.replace("\\\\<b>", "")  # only ever escaped


def test_hostile_justification_is_escaped_and_length_capped() -> None:
    card = request_card(hostile_record(State.PENDING_APPROVAL), now=NOW, viewer="approver", approver_ids=[MRI])
    justification = facts(card)["Justification"]
    assert justification.startswith("\\[APPROVED\\]\\(https[:]//evil[.]example) \\!\\[x\\]\\(https[:]//evil[.]")
    assert "gnp.exe \\<b>hi\\</b>" in justification
    assert len(justification) <= 1000 and justification.endswith("…")
    assert len(json.dumps(card)) < 28_000


def test_hostile_vote_and_ticket_text_is_escaped() -> None:
    text = all_text(request_card(hostile_record(State.DENIED), now=NOW))
    assert "Denied by \\[APPROVED\\]\\(https[:]//evil[.]example)" in text
    assert "https://" not in text


def test_hostile_intake_input_is_kept_in_the_inputs_but_never_rendered_as_markdown() -> None:
    form = IntakeForm(entitlement="global-admin", duration_minutes=60, justification=HOSTILE, ticket=SHORT,
                      target=SHORT)
    card = intake_card(INTAKE_CHOICES, form, draft_id="d-1", field_errors={"justification": HUGE, "ticket": SHORT},
                       problems=[HUGE, SHORT], triage_note="Suggested from your message: " + HUGE,
                       allow_other_target=True)
    check_card(card)
    # What the user typed goes back into the box as typed (minus invisible characters)...
    assert inputs(card)["justification"]["value"] == HOSTILE.replace("\u202e", "").replace("\u200b", "")
    # ...while every echo of it in text is inert.
    assert "Suggested from your message: \\[APPROVED\\]" in all_text(card)


def test_find_links_catches_what_it_should() -> None:
    bad = {
        "type": "AdaptiveCard",
        "body": [
            {"type": "TextBlock", "text": "[x](y)"},
            {"type": "TextBlock", "text": "see https://evil.example"},
            {"type": "TextBlock", "text": "www.evil.com"},
            {"type": "TextBlock", "text": "![i](p.png)"},
            {"type": "TextBlock", "text": "[x] (y)"},
            {"type": "Image", "url": "p.png"},
            {"type": "FactSet", "facts": [{"title": "a", "value": "<mailto:a@b.c>"}]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "go", "url": "https://evil.example"}],
    }
    hits = find_links(bad)
    for needle in ["body[0]", "body[1]", "body[2]", "body[3]", "body[4]", "body[5].url", "body[6]",
                   "actions[0]: Action.OpenUrl"]:
        assert any(needle in h for h in hits), (needle, hits)
    assert find_links({"type": "TextBlock", "text": "\\[x\\]\\(y) https[:]//evil[.]example"}) == []


def test_other_cards_escape_their_text() -> None:
    for card in (
        alert_card(SHORT, [(SHORT, HUGE)], "critical", details=HUGE),
        help_card([(SHORT, HUGE)]),
        message_card(HUGE),
    ):
        check_card(card)


def test_approver_names_in_pending_summary_are_escaped() -> None:
    decision = make_decision().model_copy(update={"approvers": tuple(
        a.model_copy(update={"name": SHORT}) for a in make_decision().approvers)})
    record = make_record(State.PENDING_APPROVAL, decision=decision)
    vote = Approval(request_id=record.id, approver=APPROVER, approver_name=SHORT, verdict=Verdict.APPROVE,
                    at=NOW, request_version=1)
    card = approval_card(record.model_copy(update={"approvals": (vote,)}), NOW, [MRI])
    check_card(card)


@pytest.mark.parametrize("name", list(CARDS))
def test_a_bundle_with_hostile_member_names_renders_inert_and_names_every_member(name: str) -> None:
    # A bundle's members are named on every card (role_name): their names reach the card like the role's did.
    member = make_decision().model_copy(update={"entitlement_name": SHORT})
    bundle = hostile_decision().model_copy(update={"entitlement": "b", "entitlement_name": SHORT,
                                                   "members": (member, member.model_copy(update={
                                                       "entitlement_name": "Helpdesk Administrator"}))})
    record = hostile_record(State.ACTIVE).model_copy(update={"decision": bundle})
    card = CARDS[name](record)
    check_card(card)
    assert "Helpdesk Administrator" in all_text(card) or name == "list"
