"""Backup approvers (issue 16, item 10): a person listed only under an approver group's `backup` may decide a
request once it has escalated (`escalated_at`), not before; `backup_may_approve: always` lets them decide at once.
A member of the group decides at once even when they are also listed as a backup."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.approval import ApprovalRefusedError, apply_vote, authorise_vote
from policies.document import PolicyDocument, PolicyError, parse_policy
from policies.lifecycle import Event, State
from policies.model import Actor, Verdict
from policies.record import RequestRecord
from tests.factories import PEOPLE, facts, record_for, request, ticket

TEXT = Path("policies/default.yaml").read_text()
DEFAULT = parse_policy(TEXT)
SECURITY_LEADS_BACKUP = ("    backup:\n      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, "
                         "upn: bo@contoso.example}\n\n")
assert TEXT.count(SECURITY_LEADS_BACKUP) == 1
ALWAYS_TEXT = TEXT.replace(SECURITY_LEADS_BACKUP,
                           SECURITY_LEADS_BACKUP.rstrip("\n") + "\n    backup_may_approve: always\n\n")
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
BO, MORGAN, DANA = PEOPLE["bo"].object_id, PEOPLE["morgan"].object_id, PEOPLE["dana"].object_id
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def always() -> PolicyDocument:
    return parse_policy(ALWAYS_TEXT)


def security_admin_request(policy, at: datetime = NOW) -> RequestRecord:
    """Riley (IT admin) asks for Security Administrator: the security leads decide; Bo is only their backup."""
    req = request("riley", entitlement="security-admin", ticket_ref="INC0012347", at=at,
                  justification="Review the suspicious sign-in alerts for the finance team, INC0012347")
    rec = record_for(policy, req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")),
                     at)
    assert rec.state is State.PENDING_APPROVAL, rec.decision.reasons
    return rec


def escalate(record: RequestRecord, at: datetime) -> RequestRecord:
    return record.apply(Event.ESCALATED, Actor.system("reconciler"), at, escalated_at=at)


def test_the_shipped_policy_defaults_to_after_escalation():
    assert all(g.backup_may_approve == "after_escalation" for g in DEFAULT.approver_groups.values())
    assert always().approver_groups["security-leads"].backup_may_approve == "always"


def test_an_unknown_backup_setting_is_refused():
    with pytest.raises(PolicyError, match="backup_may_approve"):
        parse_policy(TEXT.replace(SECURITY_LEADS_BACKUP,
                                  SECURITY_LEADS_BACKUP.rstrip("\n") + "\n    backup_may_approve: sometimes\n\n"))


@PROPS
@given(st.integers(0, 59 * 60), st.sampled_from([Verdict.APPROVE, Verdict.DENY]))
def test_a_backup_cannot_decide_before_the_request_escalates(seconds, verdict):
    record = security_admin_request(DEFAULT)
    with pytest.raises(ApprovalRefusedError) as err:
        authorise_vote(record, BO, verdict, NOW + timedelta(seconds=seconds), DEFAULT, reason="not now")
    assert err.value.code.value == "not_escalated"
    assert "escalat" in err.value.message


@PROPS
@given(st.integers(0, 50 * 60), st.integers(0, 9 * 60), st.sampled_from([Verdict.APPROVE, Verdict.DENY]))
def test_a_backup_may_decide_once_the_request_has_escalated(escalated_after, then, verdict):
    record = escalate(security_admin_request(DEFAULT), NOW + timedelta(seconds=escalated_after))
    at = NOW + timedelta(seconds=escalated_after + then)
    approver = authorise_vote(record, BO, verdict, at, DEFAULT, reason="checked with the SOC")
    new, event = apply_vote(record, approver, verdict, at, reason="checked with the SOC")
    assert event in {Event.APPROVED, Event.DENIED}
    assert new.approvals[-1].approver == BO


@PROPS
@given(st.integers(0, 59 * 60))
def test_always_lets_a_backup_decide_at_once(seconds):
    policy = always()
    record = security_admin_request(policy)
    authorise_vote(record, BO, Verdict.APPROVE, NOW + timedelta(seconds=seconds), policy)


@PROPS
@given(st.integers(0, 59 * 60), st.booleans())
def test_members_decide_at_once(seconds, lenient):
    policy = always() if lenient else DEFAULT
    record = security_admin_request(policy)
    for member in (MORGAN, DANA):
        authorise_vote(record, member, Verdict.APPROVE, NOW + timedelta(seconds=seconds), policy)


def test_a_member_who_is_also_a_backup_decides_at_once():
    # Identity leads list Bo as a member and as their backup: membership wins.
    req = request("riley", ticket_ref="INC0012347", at=NOW,
                  justification="Migrate the legacy MFA registrations to the new policy, INC0012347")
    record = record_for(DEFAULT, req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")),
                        NOW)
    assert record.state is State.PENDING_APPROVAL
    authorise_vote(record, BO, Verdict.APPROVE, NOW, DEFAULT)


def test_membership_in_a_later_group_still_counts():
    # Bo is only a backup of the first group but a member of the second: he may decide at once.
    text = TEXT.replace("    approvers: [security-leads]\n", "    approvers: [security-leads, identity-leads]\n", 1)
    policy = parse_policy(text)
    record = security_admin_request(policy)
    authorise_vote(record, BO, Verdict.APPROVE, NOW, policy)
