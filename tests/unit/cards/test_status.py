from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cards.approval import approval_base_card, approval_card, decided_card
from cards.status import request_card
from cards.verbs import Verb
from policies.lifecycle import State
from policies.model import Outcome
from tests.unit.cards.factory import MRI, NOW, make_decision, make_record, make_request
from tests.unit.cards.helpers import all_text, check_card, executes, facts, inputs, of_type, texts


def verbs(card: dict) -> list[str]:
    return [a["verb"] for a in executes(card)]


def badge(card: dict) -> str:
    return card["body"][0]["columns"][1]["items"][0]["text"]


# --- header, facts and wording --------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "label"), [
    (State.PENDING_APPROVAL, "PENDING"), (State.APPROVED, "APPROVED"), (State.DENIED, "DENIED"),
    (State.CANCELLED, "CANCELLED"), (State.APPROVAL_EXPIRED, "APPROVAL EXPIRED"), (State.ACTIVATING, "ACTIVATING"),
    (State.ACTIVE, "ACTIVE"), (State.REVOKING, "REVOKING"), (State.EXPIRED, "EXPIRED"), (State.REVOKED, "REVOKED"),
    (State.FAILED, "FAILED"),
])
def test_header_shows_role_and_state_badge(state: State, label: str) -> None:
    card = request_card(make_record(state), now=NOW)
    assert badge(card) == label
    assert "Global Administrator" in texts(card)[:2]


def test_facts_describe_the_request() -> None:
    card = request_card(make_record(State.PENDING_APPROVAL), now=NOW)
    f = facts(card)
    assert f["Request id"] == "req-0001"
    assert f["Requester"] == "Alex Example"
    assert "For" not in f  # requesting for oneself
    assert f["Role"] == "Global Administrator"
    assert f["Duration"] == "2 hours"
    assert f["Ticket"].startswith("INC0012345 (incident, In Progress, P2)")
    assert f["Justification"] == "Restore the Exchange connector after INC0012345 broke mail flow."
    assert f["Decision"] == "Waiting for approval by Dana Whitfield (1 needed)."
    assert f["Requested"] == "2026-11-23 12:30 UTC (30 minutes ago)"


@pytest.mark.parametrize(("state", "summary"), [
    (State.NEW, "Waiting for approval by Dana Whitfield (1 needed)."),
    (State.APPROVED, "Approved by Dana Whitfield."),
    (State.ACTIVE, "Approved by Dana Whitfield."),
    (State.DENIED, "Denied by an approver."),
    (State.CANCELLED, "Needed 1 approval(s), got 0."),
    (State.APPROVAL_EXPIRED, "Needed 1 approval(s), got 0."),
])
def test_decision_fact_reflects_where_the_decision_stands(state: State, summary: str) -> None:
    assert facts(request_card(make_record(state), now=NOW))["Decision"] == summary


def test_for_shows_the_target_when_it_is_someone_else() -> None:
    request = make_request(target="aaaaaaaa-0000-0000-0000-000000000099")
    record = make_record(State.PENDING_APPROVAL, request=request, target_name="Sam Okafor",
                         target_upn="sam@contoso.example")
    assert facts(request_card(record, now=NOW))["For"] == "Sam Okafor (sam@contoso.example)"


def test_pending_card_explains_why_and_when_the_window_closes() -> None:
    text = all_text(request_card(make_record(State.PENDING_APPROVAL), now=NOW))
    assert "Needs approval because:" in text
    assert "• Global Administrator always requires approval." in text
    assert "The approval window closes at 13:30 UTC (in 30 minutes)." in text
    assert "⚠ Unusual timing" in text


def test_quorum_progress_is_shown_when_more_than_one_approval_is_needed() -> None:
    record = make_record(State.PENDING_APPROVAL, decision=make_decision(quorum=2))
    assert "0 of 2 approvals so far." in all_text(request_card(record, now=NOW))


def test_hints_and_flags_are_in_words() -> None:
    decision = make_decision(hints=("Helpdesk Administrator would be enough for a password reset.",),
                             flags=("unusual_timing", "for_someone_else", "over_privileged"))
    text = all_text(request_card(make_record(State.PENDING_APPROVAL, decision=decision), now=NOW))
    assert "Least privilege: Helpdesk Administrator would be enough for a password reset." in text
    assert "⚠ Unusual timing · Requested for someone else · More privilege than the task needs" in text


def test_denied_by_an_approver_shows_who_when_and_why() -> None:
    text = all_text(request_card(make_record(State.DENIED), now=NOW))
    assert "• Denied by Dana Whitfield at 12:34 UTC: Use the Exchange role." in text
    assert "Needed approval because:" in text


def test_denied_by_policy_lists_the_reasons() -> None:
    record = make_record(State.DENIED, decision=make_decision(Outcome.DENY))
    card = request_card(record, now=NOW)
    assert "Denied by policy because:" in all_text(card)
    assert "• Duration 8 hours exceeds the 4 hours maximum for Global Administrator." in all_text(card)
    assert facts(card)["Decision"] == "Denied by policy."


def test_approved_shows_the_approver_and_time() -> None:
    text = all_text(request_card(make_record(State.APPROVED), now=NOW))
    assert "• Approved by Dana Whitfield at 12:34 UTC" in text


def test_approved_by_rule_says_which_rule() -> None:
    record = make_record(State.ACTIVE, decision=make_decision(Outcome.AUTO_APPROVE))
    text = all_text(request_card(record, now=NOW))
    assert "• Approved by rule: incident is P1 and Sam Okafor is on call (Identity On-Call primary)." in text


def test_active_card_says_until_when() -> None:
    card = request_card(make_record(State.ACTIVE), now=NOW)
    assert texts(card)[3] == "Active until 14:35 UTC (in 1 hour 35 minutes)"  # right under the header


def test_active_until_tomorrow_includes_the_date() -> None:
    record = make_record(State.ACTIVE, request=make_request(duration=timedelta(hours=12)))
    assert "Active until 2026-11-24 00:35 UTC (in 11 hours 35 minutes)" in texts(request_card(record, now=NOW))


def test_expired_card_shows_start_end_and_reason() -> None:
    text = all_text(request_card(make_record(State.EXPIRED), now=NOW))
    assert "Started 2026-11-23 12:35 UTC, ended 2026-11-23 14:35 UTC." in text
    assert "End reason: the granted time ran out" in text


def test_revoked_card_shows_the_recorded_end_reason() -> None:
    text = all_text(request_card(make_record(State.REVOKED), now=NOW))
    assert "Started 2026-11-23 12:35 UTC, ended 2026-11-23 13:26 UTC." in text
    assert "End reason: work finished" in text


def test_cancelled_failed_and_expired_approval_say_what_happened() -> None:
    assert "Cancelled by Alex Example at 12:35 UTC." in all_text(request_card(make_record(State.CANCELLED), now=NOW))
    assert "Failed: Graph refused the assignment (403 Forbidden)." in all_text(
        request_card(make_record(State.FAILED), now=NOW))
    assert "Nobody decided in time; the request expired at 13:30 UTC." in all_text(
        request_card(make_record(State.APPROVAL_EXPIRED), now=NOW))


# --- actions by viewer and state ------------------------------------------------------------------------------

def test_approver_view_has_approve_and_deny_with_terms() -> None:
    record = make_record(State.PENDING_APPROVAL)
    card = approval_card(record, NOW, [MRI])
    check_card(card)
    approve, deny_card = card["actions"]
    assert approve["type"] == "Action.Execute" and approve["title"] == "Approve"
    assert approve["verb"] == Verb.REQUEST_APPROVE and approve["style"] == "positive"
    assert approve["data"] == {"requestId": "req-0001", "terms": record.terms_digest}
    assert deny_card["type"] == "Action.ShowCard" and deny_card["title"] == "Deny"
    reason = inputs(deny_card)["reason"]
    assert reason["type"] == "Input.Text" and reason["isRequired"] is True and reason["errorMessage"]
    (deny,) = deny_card["card"]["actions"]
    assert deny["verb"] == Verb.REQUEST_DENY and deny["style"] == "destructive"
    assert deny["data"] == {"requestId": "req-0001", "terms": record.terms_digest}
    assert approve["fallback"] == {"type": "Action.Submit", "title": "Approve", "style": "positive",
                                   "data": {"verb": "request.approve", "requestId": "req-0001",
                                            "terms": record.terms_digest}}


def test_terms_change_when_the_request_changes() -> None:
    a = approval_card(make_record(State.PENDING_APPROVAL), NOW, [MRI])
    b = approval_card(make_record(State.PENDING_APPROVAL, request=make_request(duration=timedelta(hours=4))),
                      NOW, [MRI])
    assert a["actions"][0]["data"]["terms"] != b["actions"][0]["data"]["terms"]


@pytest.mark.parametrize("state", list(State), ids=str)
def test_readonly_has_no_actions_in_any_state(state: State) -> None:
    card = request_card(make_record(state), now=NOW, viewer="readonly")
    assert "actions" not in card
    assert executes(card) == []
    assert of_type(card, "ActionSet") == [] and of_type(card, "Action.ShowCard") == []


@pytest.mark.parametrize("state", [s for s in State if s is not State.PENDING_APPROVAL], ids=str)
def test_approver_has_no_actions_once_the_request_is_not_pending(state: State) -> None:
    assert "actions" not in request_card(make_record(state), now=NOW, viewer="approver", approver_ids=[MRI])


def test_requester_can_cancel_a_pending_request() -> None:
    card = request_card(make_record(State.PENDING_APPROVAL), now=NOW, viewer="requester")
    assert [(a["title"], a["verb"], a["data"]) for a in executes(card)] == [
        ("Cancel request", "request.cancel", {"requestId": "req-0001"})]


def test_requester_can_deactivate_or_extend_an_active_grant() -> None:
    card = request_card(make_record(State.ACTIVE), now=NOW, viewer="requester")
    deactivate, extend = card["actions"]
    assert (deactivate["title"], deactivate["verb"], deactivate["data"]) == (
        "Deactivate now", "grant.deactivate", {"requestId": "req-0001"})
    assert extend["type"] == "Action.ShowCard" and extend["title"] == "Extend"
    minutes = inputs(extend)["minutes"]
    assert minutes["type"] == "Input.ChoiceSet"
    assert [c["value"] for c in minutes["choices"]] == ["15", "30", "60"]
    (go,) = extend["card"]["actions"]
    assert (go["verb"], go["data"]) == ("grant.extend", {"requestId": "req-0001"})


@pytest.mark.parametrize("state", [s for s in State if s not in (State.PENDING_APPROVAL, State.ACTIVE)], ids=str)
def test_requester_has_no_actions_in_other_states(state: State) -> None:
    assert "actions" not in request_card(make_record(state), now=NOW, viewer="requester")


# --- refresh --------------------------------------------------------------------------------------------------

def test_pending_card_refreshes_for_the_approvers_only() -> None:
    card = approval_base_card(make_record(State.PENDING_APPROVAL), NOW, [MRI, "29:other"])
    assert "actions" not in card  # everyone else sees the read-only base card
    refresh = card["refresh"]
    assert refresh["userIds"] == [MRI, "29:other"]
    action = refresh["action"]
    assert (action["type"], action["verb"], action["data"]) == (
        "Action.Execute", "request.refresh", {"requestId": "req-0001"})
    assert action["fallback"]["data"] == {"verb": "request.refresh", "requestId": "req-0001"}


def test_refresh_user_ids_are_deduplicated_and_capped_at_60() -> None:
    ids = [f"29:user-{i}" for i in range(100)]
    card = approval_card(make_record(State.PENDING_APPROVAL), NOW, ids[:1] + ids)
    assert card["refresh"]["userIds"] == ids[:60]
    check_card(card)


def test_refresh_with_an_empty_list_means_manual_refresh_only() -> None:
    assert approval_base_card(make_record(State.PENDING_APPROVAL), NOW, [])["refresh"]["userIds"] == []


def test_refresh_leaves_out_anything_that_is_not_a_teams_mri() -> None:
    card = approval_card(make_record(State.PENDING_APPROVAL), NOW, ["cccccccc-0000-0000-0000-000000000002", MRI])
    assert card["refresh"]["userIds"] == [MRI]


def test_no_refresh_without_approver_ids_or_once_decided() -> None:
    assert "refresh" not in request_card(make_record(State.PENDING_APPROVAL), now=NOW, viewer="approver")
    assert "refresh" not in approval_card(make_record(State.APPROVED), NOW, [MRI])
    assert "refresh" not in decided_card(make_record(State.DENIED), NOW)


def test_cards_are_deterministic() -> None:
    record = make_record(State.PENDING_APPROVAL)
    assert json.dumps(approval_card(record, NOW, [MRI])) == json.dumps(approval_card(record, NOW, [MRI]))


def test_a_denied_request_card_gives_each_reason_once():
    from cards.notice import with_notice
    from cards.status import request_card
    from policies.model import Effect, Outcome
    from tests.unit.cards.factory import NOW, make_decision, make_record, rule

    rules = (rule("denylist", False, Effect.DENY, "The target is on the denylist."),
             rule("freeze", False, Effect.DENY, "A change freeze is in effect."))
    decision = make_decision(Outcome.DENY, rules=rules)
    record = make_record(State.DENIED, decision=decision)
    card = with_notice(request_card(record, now=NOW, viewer="requester"), "Denied by policy; the reasons are below.",
                       "attention")
    text = json.dumps(card)
    assert text.count("The target is on the denylist") == 1 and text.count("change freeze is in effect") == 1
    assert ".;" not in text and ".." not in text
    assert record.decision.summary() == "Denied: The target is on the denylist; A change freeze is in effect."
