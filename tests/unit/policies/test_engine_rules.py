from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies.document import parse_policy
from policies.engine import eligible_entitlements, evaluate, vague_reason
from policies.model import ActiveGrantFact, Outcome
from tests.factories import PEOPLE, facts, request, ticket

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def rule(decision, name):
    return [r for r in decision.rules if r.rule == name]


@pytest.mark.parametrize("text", [
    "need admin access", "Need Admin Access!!", "NEED ADMIN ACCES", "doing admin stuff", "doin admin stuff",
    "just because", "Just because.", "testing", "Testing 123", "test", "need access INC0012345",
    "please give me admin rights asap", "as discussed",
])
def test_vague_justifications_are_rejected(policy, text):
    assert vague_reason(policy, text) is not None


@pytest.mark.parametrize("text", [
    "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345",
    "Rotate the federation signing certificate before it expires tonight",
    "Restore the deleted enterprise app for payroll SSO",
])
def test_specific_justifications_pass(policy, text):
    assert vague_reason(policy, text) is None


def test_vague_justification_denies_even_with_a_valid_ticket(policy):
    req = request("sam", justification="doing admin stuff INC0012345", at=NOW)
    d = evaluate(req, facts("sam", ticket_facts=ticket()), NOW, policy)
    assert d.outcome is Outcome.DENY
    assert not rule(d, "justification.specific")[0].passed


def test_duration_over_the_lane_maximum_is_denied_never_granted(policy):
    # Sam is only eligible through the 60-minute break-glass lane.
    req = request("sam", minutes=90, at=NOW)
    d = evaluate(req, facts("sam", ticket_facts=ticket()), NOW, policy)
    assert d.outcome is Outcome.DENY
    assert d.granted_duration is None
    assert "exceeds the 1 hour maximum" in " ".join(d.reasons)


def test_longer_request_by_an_it_admin_uses_the_standard_path(policy):
    req = request("riley", minutes=180, ticket_ref="INC0012347",
                  justification="Migrate the legacy MFA registrations to the new policy, INC0012347", at=NOW)
    d = evaluate(req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")), NOW, policy)
    assert d.outcome is Outcome.NEEDS_APPROVAL
    assert d.max_duration == timedelta(hours=4)


@pytest.mark.parametrize("case,tfacts,message", [
    ("missing", None, "could not be verified"),
    ("unknown", ticket(exists=False), "does not exist"),
    ("closed", ticket(open_=False), "is not open"),
    ("stranger", ticket(caller="someone@contoso.example"), "not the caller"),
])
def test_ticket_rules(policy, case, tfacts, message):
    d = evaluate(request("sam", at=NOW), facts("sam", ticket_facts=tfacts), NOW, policy)
    assert d.outcome is Outcome.DENY
    assert message in " ".join(d.reasons)


def test_assignment_group_membership_counts_as_involvement(policy):
    t = ticket(caller="someone@contoso.example", group_members=frozenset({"SAM@contoso.example"}))
    d = evaluate(request("sam", at=NOW), facts("sam", ticket_facts=t), NOW, policy)
    assert d.outcome is Outcome.AUTO_APPROVE, d.reasons


def test_malformed_ticket_number_is_rejected(policy):
    d = evaluate(request("sam", ticket_ref="TICKET-1", at=NOW), facts("sam"), NOW, policy)
    assert "not a recognised ticket number" in " ".join(d.reasons)


def test_requesting_for_someone_else_is_off_by_default(policy):
    req = request("riley", target="sam", entitlement="user-admin", ticket_ref="INC0012347",
                  justification="Onboard the new identity engineer accounts, INC0012347", at=NOW)
    d = evaluate(req, facts("riley", target="sam", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")),
                 NOW, policy)
    assert d.outcome is Outcome.DENY
    assert "for someone else is not allowed" in " ".join(d.reasons)


def test_service_account_pattern_is_denylisted(policy):
    req = request("riley", target="svc", at=NOW)
    d = evaluate(req, facts("riley", target="svc", ticket_facts=ticket(caller="riley@contoso.example")), NOW, policy)
    assert any("svc-*@*" in r for r in d.reasons)


def test_no_approval_role_is_auto_approved_in_business_hours(policy):
    ny_morning = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    req = request("alex", entitlement="helpdesk-admin", ticket_ref="INC0012347",
                  justification="Reset MFA for the exec assistant locked out after phone swap, INC0012347",
                  at=ny_morning)
    t = ticket("INC0012347", caller="alex@contoso.example", priority=3)
    d = evaluate(req, facts("alex", ticket_facts=t), ny_morning, policy)
    assert d.outcome is Outcome.AUTO_APPROVE, d.reasons


def test_service_desk_business_hours_follow_their_own_timezone(policy):
    # 23:30 UTC on a Monday is 18:30 in New York (inside) but 00:30 in Berlin (outside).
    late = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
    req = request("alex", entitlement="helpdesk-admin", ticket_ref="INC0012347",
                  justification="Reset MFA for the exec assistant locked out after phone swap, INC0012347", at=late)
    t = ticket("INC0012347", caller="alex@contoso.example", priority=3)
    d = evaluate(req, facts("alex", ticket_facts=t), late, policy)
    assert rule(d, "timing.business_hours")[0].passed


def test_unusual_timing_blocks_auto_approval_of_a_no_approval_role(policy):
    night = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    req = request("riley", entitlement="user-admin", ticket_ref="INC0012347",
                  justification="Restore the deleted accounts of the finance team, INC0012347", at=night)
    d = evaluate(req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")), night, policy)
    assert d.outcome is Outcome.NEEDS_APPROVAL, d.reasons
    assert "unusual_timing" in d.flags
    assert {a.name for a in d.approvers} == {"Dana Whitfield", "Bo Achterberg"}


def test_year_end_freeze_requires_approval_but_exempts_break_glass(policy):
    frozen = datetime(2026, 12, 22, 9, 0, tzinfo=UTC)
    riley = request("riley", entitlement="user-admin", ticket_ref="INC0012347",
                    justification="Restore the deleted accounts of the finance team, INC0012347", at=frozen)
    d = evaluate(riley, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")), frozen,
                 policy)
    assert d.outcome is Outcome.NEEDS_APPROVAL and "change_freeze" in d.flags
    on_shift = policy.rotations["identity-oncall"].on_call(frozen).object_id
    who = "sam" if on_shift == PEOPLE["sam"].object_id else "kai"
    caller = f"{who}@contoso.example"
    d2 = evaluate(request(who, at=frozen), facts(who, ticket_facts=ticket(caller=caller)), frozen, policy)
    assert d2.outcome is Outcome.AUTO_APPROVE, d2.reasons


def test_second_request_for_a_role_already_held_is_denied(policy):
    held = ActiveGrantFact(request_id="BG-OLD001", entitlement="global-admin", state="active",
                           ends_at=NOW + timedelta(minutes=20))
    d = evaluate(request("sam", at=NOW), facts("sam", ticket_facts=ticket(), active_grants=(held,)), NOW, policy)
    assert d.outcome is Outcome.DENY
    assert "extend it instead" in " ".join(d.reasons)


def test_max_active_grants_per_principal(policy):
    held = tuple(ActiveGrantFact(request_id=f"BG-{i}", entitlement=e, state="active")
                 for i, e in enumerate(["user-admin", "helpdesk-admin"]))
    d = evaluate(request("sam", at=NOW), facts("sam", ticket_facts=ticket(), active_grants=held), NOW, policy)
    assert "limit is 2" in " ".join(d.reasons)


def test_extension_counts_the_time_already_granted(policy):
    req = request("sam", minutes=40, at=NOW).model_copy(update={"extends": "BG-OLD001"})
    d = evaluate(req, facts("sam", ticket_facts=ticket(), already_granted=timedelta(minutes=30)), NOW, policy)
    assert d.outcome is Outcome.DENY
    assert "Total duration 1 hour 10 minutes exceeds" in " ".join(d.reasons)


def test_quorum_larger_than_the_approver_pool_fails_closed(policy):
    text = open("policies/default.yaml").read().replace("    quorum: 1\n", "    quorum: 3\n", 1)
    strict = parse_policy(text)
    req = request("riley", ticket_ref="INC0012347",
                  justification="Migrate the legacy MFA registrations to the new policy, INC0012347", at=NOW)
    d = evaluate(req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")), NOW, strict)
    assert d.outcome is Outcome.DENY
    assert "3 approver(s) needed but only 2 eligible" in " ".join(d.reasons)


def test_unknown_entitlement_is_denied(policy):
    d = evaluate(request("sam", entitlement="exchange-admin", at=NOW), facts("sam"), NOW, policy)
    assert d.outcome is Outcome.DENY and d.rules[0].rule == "entitlement.known"


def test_eligible_entitlements_for_the_intake_form(policy):
    names = [e.id for e in eligible_entitlements(policy, PEOPLE["sam"])]
    assert names == ["global-admin", "conditional-access-admin", "user-admin", "helpdesk-admin"]
    assert eligible_entitlements(policy, PEOPLE["breakglass"]) == []


def test_same_input_same_output(policy):
    req, f = request("sam", at=NOW), facts("sam", ticket_facts=ticket())
    assert evaluate(req, f, NOW, policy) == evaluate(req, f, NOW, policy)


def test_naive_now_is_refused(policy):
    with pytest.raises(ValueError):
        evaluate(request("sam", at=NOW), facts("sam"), datetime(2026, 11, 23, 10, 0), policy)


def test_a_denial_summary_joins_its_reasons_once_without_doubled_punctuation():
    from policies.model import join_reasons

    assert join_reasons(["The target is on the denylist.", "A change freeze is in effect."]) == \
        "The target is on the denylist; A change freeze is in effect."
    assert join_reasons(["Over the maximum duration (4 hours)", "  "]) == "Over the maximum duration (4 hours)."
    assert join_reasons([]) == ""
