"""Every card, in every state and for every viewer, validates against the Adaptive Cards 1.5 schema and holds
the invariants in `helpers.check_card` (plain JSON, no links, no invisible characters, well-formed actions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cards.approval import approval_base_card, approval_card, decided_card
from cards.intake import IntakeForm, intake_card
from cards.lists import help_card, message_card, requests_list_card
from cards.receipt import alert_card, grant_receipt_card
from cards.status import request_card
from policies.lifecycle import State
from policies.model import Outcome
from policies.record import RequestRecord
from tests.unit.cards.factory import INTAKE_CHOICES, MRI, NOW, make_decision, make_record, make_request
from tests.unit.cards.helpers import check_card, schema_errors

RecordCard = Callable[[RequestRecord], dict[str, Any]]

RECORD_CARDS: dict[str, RecordCard] = {
    "request_card[readonly]": lambda r: request_card(r, now=NOW),
    "request_card[requester]": lambda r: request_card(r, now=NOW, viewer="requester"),
    "request_card[approver]": lambda r: request_card(r, now=NOW, viewer="approver"),
    "request_card[approver+refresh]": lambda r: request_card(r, now=NOW, viewer="approver", approver_ids=[MRI]),
    "request_card[requester+refresh]": lambda r: request_card(r, now=NOW, viewer="requester", approver_ids=[MRI]),
    "approval_card": lambda r: approval_card(r, NOW, [MRI]),
    "approval_base_card": lambda r: approval_base_card(r, NOW, [MRI]),
    "decided_card": lambda r: decided_card(r, NOW),
    "grant_receipt_card": lambda r: grant_receipt_card(r, NOW, "Remove the assignment in Entra PIM."),
    "requests_list_card": lambda r: requests_list_card("Your requests", [r, r], NOW, "Nothing here."),
}


@pytest.mark.parametrize("state", list(State), ids=str)
@pytest.mark.parametrize("name", list(RECORD_CARDS))
def test_record_cards_validate_in_every_state(name: str, state: State) -> None:
    check_card(RECORD_CARDS[name](make_record(state)))


def _variants() -> dict[str, RequestRecord]:
    other = make_request(target="aaaaaaaa-0000-0000-0000-000000000099")
    return {
        "denied by policy": make_record(State.DENIED, decision=make_decision(Outcome.DENY)),
        "auto-approved active": make_record(State.ACTIVE, decision=make_decision(Outcome.AUTO_APPROVE)),
        "auto-approved expired": make_record(State.EXPIRED, decision=make_decision(Outcome.AUTO_APPROVE)),
        "for someone else": make_record(State.PENDING_APPROVAL, request=other),
        "quorum of two": make_record(State.PENDING_APPROVAL, decision=make_decision(quorum=2)),
        "no ticket": make_record(State.PENDING_APPROVAL, request=make_request(ticket=None)),
        "extension": make_record(State.ACTIVE, request=make_request(extends="req-0000")),
        "hints and flags": make_record(State.PENDING_APPROVAL, decision=make_decision(
            hints=("Helpdesk Administrator would be enough for a password reset.",),
            flags=("unusual_timing", "for_someone_else", "over_privileged", "something_new"))),
        "no names": make_record(State.ACTIVE, requester_name="", target_name="", target_upn=""),
    }


@pytest.mark.parametrize("variant", list(_variants()))
@pytest.mark.parametrize("name", list(RECORD_CARDS))
def test_record_cards_validate_for_decision_variants(name: str, variant: str) -> None:
    check_card(RECORD_CARDS[name](_variants()[variant]))


CHOICES = INTAKE_CHOICES
EMPTY_FORM = IntakeForm(entitlement=None, duration_minutes=None, justification="", ticket="", target="")
FILLED_FORM = IntakeForm(entitlement="global-admin", duration_minutes=90, justification="Fix the CA policy",
                         ticket="INC0012345", target="sam@contoso.example")

OTHER_CARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "intake_card[empty]": lambda: intake_card(CHOICES, EMPTY_FORM, draft_id="d-1"),
    "intake_card[errors]": lambda: intake_card(
        CHOICES, FILLED_FORM, draft_id="d-1", allow_other_target=True,
        field_errors={"justification": "Too vague.", "target": "Unknown user.", "form": "Try again."},
        problems=["Duration exceeds the maximum."], triage_note="Global Administrator for 90 minutes"),
    "intake_card[no choices]": lambda: intake_card([], EMPTY_FORM, draft_id="d-1"),
    "alert_card[info]": lambda: alert_card("Grant needs review", [("Request", "req-1")], "info"),
    "alert_card[warning]": lambda: alert_card("Integration failing", [("ITSM", "timeout")], details="3 retries"),
    "alert_card[critical]": lambda: alert_card("Grant failed", [], "critical", details="Graph 403"),
    "help_card": lambda: help_card([("request", "Ask for a role"), ("status <id>", "Show a request")]),
    "help_card[empty]": lambda: help_card([]),
    "requests_list_card[empty]": lambda: requests_list_card("Pending", [], NOW, "No pending requests."),
    "requests_list_card[long]": lambda: requests_list_card("All", [make_record(s) for s in State] * 3, NOW, "-"),
    "message_card": lambda: message_card("Request req-0001 was cancelled."),
}


@pytest.mark.parametrize("name", list(OTHER_CARDS))
def test_other_cards_validate(name: str) -> None:
    check_card(OTHER_CARDS[name]())


def test_the_reference_fixture_validates_and_a_teams_only_key_does_not() -> None:
    """The validator is strict enough to catch what the schema README warns about."""
    card = request_card(make_record(State.PENDING_APPROVAL), now=NOW, viewer="approver", approver_ids=[MRI])
    assert schema_errors(card) == []
    assert schema_errors({**card, "msteams": {"width": "Full", "entities": []}})
    bad_fallback = {**card, "actions": [{**card["actions"][0], "fallback": "Action.Submit"}]}
    assert schema_errors(bad_fallback)
