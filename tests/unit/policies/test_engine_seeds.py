"""The seed scenarios of the JIT procedure, decided by the shipped policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from policies.engine import evaluate
from policies.model import Outcome
from tests.factories import facts, request, ticket

MONDAY_10_BERLIN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TUESDAY_03_BERLIN = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def test_identity_oncall_member_with_p1_is_auto_approved_within_60_minutes(policy):
    req = request("sam", at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("sam", ticket_facts=ticket(priority=1)), MONDAY_10_BERLIN, policy)
    assert decision.outcome is Outcome.AUTO_APPROVE, decision.reasons
    assert decision.lane == "break-glass"
    assert decision.max_duration == timedelta(minutes=60)
    assert decision.granted_duration == timedelta(minutes=30)
    assert any("on call" in r.reason for r in decision.rules if r.rule == "approval.required" and r.passed)


def test_same_request_at_3am_without_incident_is_denied_with_reasons(policy):
    req = request("sam", at=TUESDAY_03_BERLIN, ticket_ref=None,
                  justification="Need Global Admin for 30 minutes to fix Conditional Access lockout")
    decision = evaluate(req, facts("sam"), TUESDAY_03_BERLIN, policy)
    assert decision.outcome is Outcome.DENY
    assert decision.granted_duration is None
    joined = " ".join(decision.reasons)
    assert "ticket reference is required" in joined
    assert "Unusual timing" in joined
    assert "unusual_timing" in decision.flags


def test_global_admin_for_a_password_reset_needs_approval_and_hints_helpdesk(policy):
    req = request("riley", ticket_ref="INC0012347",
                  justification="Global Admin for a password reset of the CFO's assistant, INC0012347",
                  at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("riley", ticket_facts=ticket("INC0012347", priority=3,
                                                                 caller="riley@contoso.example")),
                        MONDAY_10_BERLIN, policy)
    assert decision.outcome is Outcome.NEEDS_APPROVAL, decision.reasons
    assert decision.lane is None
    assert any("Helpdesk Administrator would be enough" in h for h in decision.hints)
    assert "over_privileged" in decision.flags
    assert decision.quorum == 1
    first = [a for a in decision.approvers if a.notify_first]
    assert [a.name for a in first] == ["Dana Whitfield"]


def test_denylisted_break_glass_account_is_denied(policy):
    req = request("morgan", target="breakglass", entitlement="security-admin", ticket_ref="INC0012346",
                  justification="Responder needs Security Admin to contain token theft, INC0012346",
                  at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("morgan", target="breakglass",
                                   ticket_facts=ticket("INC0012346", caller="morgan@contoso.example")),
                        MONDAY_10_BERLIN, policy)
    assert decision.outcome is Outcome.DENY
    assert any("can never be elevated" in r for r in decision.reasons)


def test_identity_oncall_member_not_on_shift_routes_to_the_on_call_lead(policy):
    req = request("kai", at=MONDAY_10_BERLIN, ticket_ref="INC0012348",
                  justification="Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012348")
    decision = evaluate(req, facts("kai", ticket_facts=ticket("INC0012348", caller="kai@contoso.example")),
                        MONDAY_10_BERLIN, policy)
    assert decision.outcome is Outcome.NEEDS_APPROVAL
    assert decision.lane == "break-glass"
    assert "approved by rule only when Kai Lindqvist is on shift" in " ".join(decision.reasons)
    assert [a.name for a in decision.approvers if a.notify_first] == ["Dana Whitfield"]


def test_secops_asks_for_an_on_call_responder_during_a_p1_is_approved_by_rule(policy):
    req = request("morgan", target="jordan", entitlement="security-admin", ticket_ref="INC0012346", minutes=60,
                  justification="Contain suspected token theft on the finance mailbox, INC0012346",
                  at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("morgan", target="jordan",
                                   ticket_facts=ticket("INC0012346", caller="morgan@contoso.example")),
                        MONDAY_10_BERLIN, policy)
    assert decision.outcome is Outcome.AUTO_APPROVE, decision.reasons
    assert decision.lane == "security-incident"
    assert "for_someone_else" in decision.flags
