"""Properties the engine must keep for every input, not just the examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.document import parse_policy
from policies.engine import evaluate
from policies.model import ActiveGrantFact, Facts, GrantRequest, Outcome
from tests.factories import PEOPLE, ticket

TEXT = Path("policies/default.yaml").read_text()
DEFAULT = parse_policy(TEXT)
# A variant where requesters are also approvers, so "never approve your own request" is really exercised.
SELF_APPROVING = parse_policy(TEXT.replace(
    "      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, upn: bo@contoso.example}\n"
    "    backup:",
    "      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, upn: bo@contoso.example}\n"
    "      - {object_id: cccccccc-0000-0000-0000-000000000001, name: Riley Chen}\n"
    "      - {object_id: cccccccc-0000-0000-0000-000000000003, name: Sam Okafor}\n"
    "    backup:", 1))
assert len(SELF_APPROVING.approver_groups["identity-leads"].members) == 4
POLICIES = [DEFAULT, SELF_APPROVING]

people = st.sampled_from(sorted(PEOPLE))
entitlements = st.sampled_from([e.id for e in DEFAULT.entitlements] + ["unknown-role"])
justifications = st.one_of(
    st.sampled_from([
        "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345",
        "need admin access", "testing", "Reset a password for the CFO assistant INC0012347",
        "Contain suspected token theft on the finance mailbox, INC0012346",
    ]),
    st.text(max_size=300),
)
tickets = st.one_of(st.none(), st.sampled_from(["INC0012345", "INC0012346", "CHG0001234", "bogus", ""]))
ticket_facts = st.one_of(
    st.none(),
    st.builds(lambda p, o, e, c: ticket(priority=p, open_=o, exists=e, caller=c),
              st.integers(1, 4), st.booleans(), st.booleans(),
              st.sampled_from([None] + [p.upn for p in PEOPLE.values()])),
)
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))
grants = st.lists(st.builds(lambda i, e, s: ActiveGrantFact(request_id=f"BG-{i}", entitlement=e, state=s),
                            st.integers(0, 99), entitlements,
                            st.sampled_from(["pending_approval", "approved", "active", "expired"])), max_size=3)


@st.composite
def cases(draw):
    requester, target = draw(people), draw(st.one_of(st.none(), people))
    now = draw(moments)
    req = GrantRequest(id="BG-PROP01", requester=PEOPLE[requester].object_id,
                       target=PEOPLE[target or requester].object_id, entitlement=draw(entitlements),
                       duration=timedelta(minutes=draw(st.integers(-5, 2000))), justification=draw(justifications),
                       ticket=draw(tickets), created_at=now, lane=draw(st.sampled_from([None, None, "break-glass"])))
    facts = Facts(requester=PEOPLE[requester], target=PEOPLE[target or requester], ticket=draw(ticket_facts),
                  active_grants=tuple(draw(grants)))
    return req, facts, now, draw(st.sampled_from(POLICIES))


PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(cases())
def test_a_denylisted_target_is_always_denied(case):
    req, facts, now, policy = case
    if policy.denylist.matches(facts.target.object_id, facts.target.upn):
        assert evaluate(req, facts, now, policy).outcome is Outcome.DENY


@PROPS
@given(cases())
def test_a_granted_duration_never_exceeds_the_maximum(case):
    req, facts, now, policy = case
    decision = evaluate(req, facts, now, policy)
    entitlement = policy.entitlement(req.entitlement)
    if decision.granted_duration is not None:
        assert entitlement is not None
        assert decision.granted_duration <= decision.max_duration <= entitlement.max_duration
        assert decision.granted_duration > timedelta(0)


@PROPS
@given(cases())
def test_an_unusual_timing_request_is_never_auto_approved(case):
    req, facts, now, policy = case
    decision = evaluate(req, facts, now, policy)
    if "unusual_timing" in decision.flags:
        assert decision.outcome is not Outcome.AUTO_APPROVE


@PROPS
@given(cases())
def test_a_requester_is_never_among_their_own_approvers(case):
    req, facts, now, policy = case
    decision = evaluate(req, facts, now, policy)
    ids = {a.object_id for a in decision.approvers}
    assert req.requester not in ids
    assert req.target not in ids
    if decision.outcome is Outcome.NEEDS_APPROVAL:
        assert len(ids) >= decision.quorum >= 1


@PROPS
@given(cases())
def test_every_decision_explains_itself(case):
    req, facts, now, policy = case
    decision = evaluate(req, facts, now, policy)
    if decision.outcome is not Outcome.AUTO_APPROVE:
        assert decision.reasons, decision
    assert all(r.reason for r in decision.rules)
