from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policies.approval import ApprovalRefusedError, Refusal, apply_vote, authorise_vote
from policies.document import parse_policy
from policies.lifecycle import Event, State
from policies.model import Verdict
from tests.factories import PEOPLE, facts, record_for, request, ticket

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DANA, BO, RILEY = PEOPLE["dana"].object_id, PEOPLE["bo"].object_id, PEOPLE["riley"].object_id


@pytest.fixture()
def pending(policy):
    req = request("riley", ticket_ref="INC0012347",
                  justification="Migrate the legacy MFA registrations to the new policy, INC0012347", at=NOW)
    rec = record_for(policy, req, facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example")),
                     NOW)
    assert rec.state is State.PENDING_APPROVAL
    return rec


def refused(code, *args, **kw):
    with pytest.raises(ApprovalRefusedError) as err:
        authorise_vote(*args, **kw)
    assert err.value.code is code, err.value
    return err.value


def test_approver_approves(policy, pending):
    approver = authorise_vote(pending, DANA, Verdict.APPROVE, NOW, policy)
    rec, event = apply_vote(pending, approver, Verdict.APPROVE, NOW)
    assert event is Event.APPROVED and rec.state is State.APPROVED
    assert rec.approvals[0].request_version == pending.version


def test_self_approval_is_refused_even_if_the_requester_is_an_approver(pending):
    text = Path("policies/default.yaml").read_text().replace(
        "    backup:\n      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, upn: "
        "bo@contoso.example}\n  security-leads:",
        "      - {object_id: cccccccc-0000-0000-0000-000000000001, name: Riley Chen}\n    backup:\n      - "
        "{object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, upn: bo@contoso.example}\n"
        "  security-leads:", 1)
    lenient = parse_policy(text)
    assert RILEY in {m.object_id for m in lenient.approver_groups["identity-leads"].members}
    refused(Refusal.SELF_APPROVAL, pending, RILEY, Verdict.APPROVE, NOW, lenient)


def test_non_approver_is_refused(policy, pending):
    refused(Refusal.NOT_APPROVER, pending, PEOPLE["jordan"].object_id, Verdict.APPROVE, NOW, policy)


def test_approver_removed_from_policy_after_the_card_went_out(pending):
    text = Path("policies/default.yaml").read_text().replace(
        "      - {object_id: cccccccc-0000-0000-0000-000000000002, name: Dana Whitfield, upn: dana@contoso.example}\n"
        "      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg",
        "      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg", 1)
    changed = parse_policy(text)
    refused(Refusal.NOT_APPROVER, pending, DANA, Verdict.APPROVE, NOW, changed)


def test_click_after_the_approval_window(policy, pending):
    late = NOW + policy.approval.expire_after + timedelta(seconds=1)
    refused(Refusal.WINDOW_CLOSED, pending, DANA, Verdict.APPROVE, late, policy)


def test_stale_terms_are_refused(policy, pending):
    refused(Refusal.TERMS_CHANGED, pending, DANA, Verdict.APPROVE, NOW, policy, terms="0" * 16)
    authorise_vote(pending, DANA, Verdict.APPROVE, NOW, policy, terms=pending.terms_digest)


def test_deny_needs_a_reason(policy, pending):
    refused(Refusal.REASON_REQUIRED, pending, DANA, Verdict.DENY, NOW, policy, reason="  ")
    approver = authorise_vote(pending, DANA, Verdict.DENY, NOW, policy, reason="Use Helpdesk Admin")
    rec, _ = apply_vote(pending, approver, Verdict.DENY, NOW, reason="Use Helpdesk Admin")
    assert rec.state is State.DENIED and rec.history[-1].reason == "Use Helpdesk Admin"


def test_quorum_of_two_counts_each_approver_once(policy, pending):
    two = pending.model_copy(update={"decision": pending.decision.model_copy(update={"quorum": 2})})
    a = authorise_vote(two, DANA, Verdict.APPROVE, NOW, policy)
    one, event = apply_vote(two, a, Verdict.APPROVE, NOW)
    assert event is Event.APPROVAL_RECORDED and one.state is State.PENDING_APPROVAL
    refused(Refusal.ALREADY_VOTED, one, DANA, Verdict.APPROVE, NOW, policy)
    b = authorise_vote(one, BO, Verdict.APPROVE, NOW, policy)
    done, event = apply_vote(one, b, Verdict.APPROVE, NOW)
    assert event is Event.APPROVED and done.state is State.APPROVED
    refused(Refusal.NOT_PENDING, done, BO, Verdict.APPROVE, NOW, policy)
