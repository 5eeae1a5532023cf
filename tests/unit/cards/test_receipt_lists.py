from __future__ import annotations

from datetime import timedelta

import pytest

from cards.lists import MAX_ROWS, help_card, message_card, requests_list_card
from cards.receipt import alert_card, grant_receipt_card
from policies.lifecycle import State
from policies.model import GrantMode, Outcome
from tests.unit.cards.factory import NOW, make_decision, make_record, make_request
from tests.unit.cards.helpers import all_text, check_card, facts, of_type, texts

ROLLBACK = "Remove the PIM assignment schedule; the role ends at the latest at the end time."


def test_receipt_says_who_what_when_and_how_to_roll_back() -> None:
    card = grant_receipt_card(make_record(State.ACTIVE), NOW, ROLLBACK)
    check_card(card)
    f = facts(card)
    assert f["Requested by"] == "Alex Example"
    assert f["Approved by"] == "Dana Whitfield at 12:34 UTC"
    assert f["Role"] == "Global Administrator"
    assert f["For"] == "Alex Example (alex@contoso.example)"
    assert f["Starts"] == "2026-11-23T12:35:00Z (12:35 UTC, 25 minutes ago)"
    assert f["Ends"] == "2026-11-23T14:35:00Z (14:35 UTC, in 1 hour 35 minutes)"
    assert f["Grant mode"].startswith("PIM assignment schedule")
    assert f["Ticket"] == "INC0012345"
    assert "Rollback plan" in texts(card) and ROLLBACK in texts(card)
    assert "actions" not in card


def test_receipt_for_a_rule_approved_direct_grant() -> None:
    record = make_record(State.ACTIVE, decision=make_decision(Outcome.AUTO_APPROVE))
    assert record.grant is not None
    grant = record.grant.model_copy(update={"mode": GrantMode.DIRECT, "adopted": True})
    record = record.model_copy(update={"grant": grant})
    f = facts(grant_receipt_card(record, NOW, ROLLBACK))
    assert f["Approved by"] == ("approved by rule: incident is P1 and Sam Okafor is on call "
                                "(Identity On-Call primary).")
    assert f["Grant mode"].startswith("Direct role assignment") and "adopted" in f["Grant mode"]


def test_receipt_before_the_grant_exists_still_renders() -> None:
    card = grant_receipt_card(make_record(State.APPROVED), NOW, "")
    check_card(card)
    assert facts(card)["Starts"] == "not started yet"
    assert "No rollback plan recorded." in texts(card)


@pytest.mark.parametrize(("severity", "color", "style"), [
    ("info", "accent", "accent"), ("warning", "warning", "warning"), ("critical", "attention", "attention")])
def test_alert_card_severity(severity: str, color: str, style: str) -> None:
    card = alert_card("Grant failed", [("Request", "req-0001"), ("Error", "Graph 403")], severity,  # type: ignore[arg-type]
                      details="Check the app's role assignment permissions.")
    check_card(card)
    (box,) = card["body"]
    assert box["type"] == "Container" and box["style"] == style
    badge = of_type(card, "Column")[1]["items"][0]
    assert badge["text"] == severity.upper() and badge["color"] == color
    assert facts(card) == {"Request": "req-0001", "Error": "Graph 403"}
    assert "Check the app's role assignment permissions." in texts(card)


def test_help_card_lists_commands() -> None:
    card = help_card([("request", "Ask for a role"), ("status <id>", "Show one request")])
    check_card(card)
    assert facts(card) == {"request": "Ask for a role", "status \\<id>": "Show one request"}


def test_requests_list_rows_are_compact_and_have_no_actions() -> None:
    records = [make_record(State.ACTIVE), make_record(State.PENDING_APPROVAL, request=make_request(id="req-0002")),
               make_record(State.EXPIRED, request=make_request(id="req-0003"))]
    card = requests_list_card("Your requests", records, NOW, "No requests.")
    check_card(card)
    rows = [[c["items"][0]["text"] for c in row["columns"]] for row in of_type(card, "ColumnSet")[1:]]
    assert rows == [
        ["req-0001", "Global Administrator", "active", "ends 14:35 UTC"],
        ["req-0002", "Global Administrator", "pending", "created 12:30 UTC"],
        ["req-0003", "Global Administrator", "expired", "ended 14:35 UTC"],
    ]
    assert "actions" not in card and of_type(card, "Action.Execute") == []


def test_requests_list_empty_and_long() -> None:
    assert "Nothing pending." in all_text(requests_list_card("Pending", [], NOW, "Nothing pending."))
    many = [make_record(State.ACTIVE)] * (MAX_ROWS + 5)
    card = requests_list_card("All", many, NOW, "-")
    check_card(card)
    assert len(of_type(card, "ColumnSet")) == MAX_ROWS + 1  # the header is a ColumnSet too
    assert "5 more not shown." in texts(card)


def test_message_card_is_one_escaped_text_block() -> None:
    card = message_card("Request *req-0001* was cancelled.")
    check_card(card)
    assert [b["text"] for b in card["body"]] == ["Request \\*req-0001\\* was cancelled."]


def test_active_list_row_uses_the_date_when_not_today() -> None:
    record = make_record(State.ACTIVE, request=make_request(duration=timedelta(hours=12)))
    card = requests_list_card("Active", [record], NOW, "-")
    assert "ends 2026-11-24 00:35 UTC" in texts(card)


def test_the_receipts_rollback_plan_has_no_literal_markdown():
    import json

    from cards.receipt import grant_receipt_card
    from policies.lifecycle import State
    from services.workflow.receipts import rollback_plan
    from tests.unit.cards.factory import NOW, make_record

    record = make_record(State.ACTIVE)
    card = json.dumps(grant_receipt_card(record, NOW, rollback_plan(record)))
    assert "`" not in card and "\\\\`" not in card
    assert f"deactivate {record.id}" in card
