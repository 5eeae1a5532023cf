"""Bundles: the policy section, and the bundle's decision as the strictest of its members'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.approval import current_approvers
from policies.bundles import combine
from policies.document import PolicyError, parse_policy
from policies.engine import eligible_bundles, evaluate
from policies.model import Approver, Decision, Effect, Facts, GrantRequest, Outcome, RuleResult
from tests.factories import PEOPLE, record_for, request, ticket

TEXT = Path("policies/default.yaml").read_text()
DEFAULT = parse_policy(TEXT)
BUNDLE = "incident-responder"
MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # 11:00 in Berlin: business hours
JUST = "Contain the token theft on the finance mailbox and block the attacker's sign-ins, INC0012345"
SECTION = ("bundles:\n  incident-responder:\n    display_name: Incident responder\n"
           "    entitlements: [conditional-access-admin, user-admin, helpdesk-admin]\n")
# Two members needing approval from different approver groups (valid; `policy check` warns about it).
WIDE_TEXT = TEXT.replace(SECTION, SECTION.replace("[conditional-access-admin, user-admin, helpdesk-admin]",
                                                  "[security-admin, conditional-access-admin, user-admin]"))
WIDE = parse_policy(WIDE_TEXT)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "broken.yaml")
    return [p.render("broken.yaml") for p in err.value.problems]


def test_the_shipped_policy_has_a_bundle_and_the_short_form_parses():
    assert DEFAULT.bundles[BUNDLE].entitlements == ["conditional-access-admin", "user-admin", "helpdesk-admin"]
    short = parse_policy(TEXT.replace(SECTION, "bundles:\n  pair: [security-admin, user-admin]\n"))
    assert short.bundles["pair"].entitlements == ["security-admin", "user-admin"]
    assert short.bundle_name("pair") == "pair"


@pytest.mark.parametrize("section,expected", [
    ("bundles:\n  pair: [security-admin, exchange-admin]\n",
     "bundles.pair.entitlements[1]: unknown entitlement 'exchange-admin'"),
    ("bundles:\n  empty: []\n", "bundles.empty.entitlements: a bundle needs at least two different entitlements"),
    ("bundles:\n  one: [user-admin]\n", "bundles.one.entitlements: a bundle needs at least two"),
    ("bundles:\n  twice: [user-admin, user-admin]\n", "'user-admin' is listed twice"),
    ("bundles:\n  user-admin: [security-admin, helpdesk-admin]\n",
     "bundles.user-admin: 'user-admin' is already an entitlement's id"),
    ("bundles:\n  a: [security-admin, user-admin]\n  b: [a, user-admin]\n", "'a' is a bundle"),
    ("bundles:\n  Bad Name: [security-admin, user-admin]\n", "String should match pattern"),
])
def test_broken_bundles_are_explained_with_their_line(section, expected):
    text = TEXT.replace(SECTION, section)
    assert text != TEXT
    lines = problems_of(text)
    assert any(expected in line for line in lines), lines
    assert all(line.startswith("broken.yaml:") for line in lines)


def _case(who: str = "riley", *, at: datetime = MONDAY, minutes: int = 30, **kw: object):
    req = request(who, entitlement=BUNDLE, minutes=minutes, at=at, justification=JUST, **kw)
    return req, Facts(requester=PEOPLE[who], target=PEOPLE[who], ticket=ticket(caller=PEOPLE[who].upn))


def test_the_bundle_needs_the_union_of_the_approvers_of_the_members_that_need_one():
    req, facts = _case()
    d = evaluate(req, facts, MONDAY, WIDE)
    assert d.is_bundle and [m.entitlement for m in d.members] == WIDE.bundles[BUNDLE].entitlements
    assert d.outcome is Outcome.NEEDS_APPROVAL and d.quorum == 1
    assert {a.name for a in d.approvers} == {"Morgan Ellis", "Dana Whitfield", "Priya Natarajan", "Bo Achterberg"}
    assert d.max_duration == timedelta(hours=4)  # the smallest member maximum (user-admin's 8h is larger)
    assert d.entitlement == BUNDLE and d.entitlement_name == "Incident responder"
    shipped = evaluate(req, facts, MONDAY, DEFAULT)  # only Conditional Access Administrator needs approval there
    assert {a.name for a in shipped.approvers} == {"Dana Whitfield", "Bo Achterberg"}


def test_a_bundle_that_widens_who_approves_a_tier0_member_is_a_warning():
    from policies.document import review_policy

    _, risks = review_policy(WIDE_TEXT)
    found = [r.render("p.yaml") for r in risks if r.path == "bundles.incident-responder"]
    assert len(found) == 2 and any("security-leads may approve this bundle, and with it Conditional Access "
                                   "Administrator" in f for f in found)
    _, risks = review_policy(TEXT)
    assert not [r for r in risks if r.path.startswith("bundles")]


def test_one_member_over_its_maximum_denies_the_bundle():
    policy = parse_policy(WIDE_TEXT.replace("max_duration: 4h\n    approval: required\n    approvers: "
                                            "[identity-leads]\n    eligible: [it-admins, identity-oncall]",
                                            "max_duration: 1h\n    approval: required\n    approvers: "
                                            "[identity-leads]\n    eligible: [it-admins, identity-oncall]"))
    req, facts = _case(minutes=90)
    d = evaluate(req, facts, MONDAY, policy)
    assert d.outcome is Outcome.DENY and d.max_duration == timedelta(hours=1)
    assert any("Conditional Access Administrator" in r for r in d.reasons)


def test_a_requester_not_eligible_for_every_member_is_not_offered_the_bundle_and_is_denied_it():
    assert BUNDLE in eligible_bundles(DEFAULT, PEOPLE["riley"])
    assert BUNDLE not in eligible_bundles(DEFAULT, PEOPLE["alex"])  # service desk: helpdesk only
    req, facts = _case("alex")
    assert evaluate(req, facts, MONDAY, DEFAULT).outcome is Outcome.DENY


def test_a_click_is_authorised_against_every_member_of_the_current_policy():
    req, facts = _case()
    record = record_for(WIDE, req, facts, MONDAY)
    assert {a.name for a in current_approvers(record, WIDE, MONDAY)} >= {"Morgan Ellis", "Dana Whitfield"}
    # Security Administrator's approvers changed: Morgan (security leads only) may no longer approve the bundle.
    changed = parse_policy(WIDE_TEXT.replace("    approvers: [security-leads]\n", "    approvers: [identity-leads]\n",
                                             1))
    assert "Morgan Ellis" not in {a.name for a in current_approvers(record, changed, MONDAY)}
    # A member the policy no longer has leaves nobody to approve the bundle.
    gone = WIDE.model_copy(update={"entitlements": [e for e in WIDE.entitlements if e.id != "user-admin"]})
    assert current_approvers(record, gone, MONDAY) == []


# --- properties: the strictest member -------------------------------------------------------------------------

APPROVERS = [Approver(object_id=f"aaaaaaaa-0000-0000-0000-{n:012d}", name=f"A{n}") for n in range(6)]


@st.composite
def member_decisions(draw, index: int) -> Decision:
    outcome = draw(st.sampled_from(list(Outcome)))
    pending = outcome is Outcome.NEEDS_APPROVAL
    approvers = tuple(draw(st.lists(st.sampled_from(APPROVERS), min_size=1 if pending else 0, max_size=4,
                                    unique_by=lambda a: a.object_id))) if pending else ()
    quorum = draw(st.integers(1, 3)) if pending else 0
    rules = (RuleResult(rule="x", passed=outcome is not Outcome.DENY, effect=Effect.DENY, reason=f"m{index}"),)
    return Decision(outcome=outcome, entitlement=f"e{index}", rules=rules, approvers=approvers, quorum=quorum,
                    max_duration=timedelta(minutes=draw(st.integers(1, 1440))), evaluated_at=MONDAY)


@st.composite
def bundles(draw) -> list[Decision]:
    return [draw(member_decisions(i)) for i in range(draw(st.integers(2, 5)))]


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _combine(members: list[Decision]) -> Decision:
    return combine("b", "B", members, timedelta(minutes=30), now=MONDAY, policy_digest="d",
                   escalate_after=timedelta(minutes=15), expire_after=timedelta(hours=1))


@PROPS
@given(bundles())
def test_any_member_denied_denies_the_bundle(members):
    d = _combine(members)
    if any(m.outcome is Outcome.DENY for m in members):
        assert d.outcome is Outcome.DENY and d.granted_duration is None
    if d.outcome is Outcome.AUTO_APPROVE:
        assert all(m.outcome is Outcome.AUTO_APPROVE for m in members)


@PROPS
@given(bundles())
def test_any_member_needing_approval_makes_the_bundle_need_one(members):
    d = _combine(members)
    if any(m.outcome is Outcome.NEEDS_APPROVAL for m in members):
        assert d.outcome in {Outcome.NEEDS_APPROVAL, Outcome.DENY}


@PROPS
@given(bundles())
def test_the_largest_quorum_from_the_union_of_approvers(members):
    d = _combine(members)
    asking = [m for m in members if m.outcome is Outcome.NEEDS_APPROVAL]
    union = {a.object_id for m in asking for a in m.approvers}
    if d.outcome is Outcome.NEEDS_APPROVAL:
        assert d.quorum == max(m.quorum for m in asking)
        assert {a.object_id for a in d.approvers} == union
        assert len(d.approvers) == len(union) >= d.quorum  # each person once, enough of them
    elif asking and not any(m.outcome is Outcome.DENY for m in members):
        assert len(union) < max(m.quorum for m in asking)  # denied only for want of approvers


@PROPS
@given(bundles())
def test_the_smallest_maximum_duration_and_every_member_explained(members):
    d = _combine(members)
    assert d.max_duration == min(m.max_duration for m in members)
    assert d.members == tuple(members)
    reasons = {r.reason for r in d.rules}
    assert all(f"m{i}" in reasons for i in range(len(members)))


people = st.sampled_from(sorted(PEOPLE))
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people, people, moments, st.integers(1, 600), st.sampled_from([None, "INC0012345", "CHG0001234"]))
def test_the_engine_never_decides_a_bundle_more_leniently_than_a_member_alone(who, target, now, minutes, ref):
    req = GrantRequest(id="BG-PROP02", requester=PEOPLE[who].object_id, target=PEOPLE[target].object_id,
                       entitlement=BUNDLE, duration=timedelta(minutes=minutes), justification=JUST, ticket=ref,
                       created_at=now)
    facts = Facts(requester=PEOPLE[who], target=PEOPLE[target], ticket=ticket(caller=PEOPLE[who].upn))
    d = evaluate(req, facts, now, DEFAULT)
    alone = [evaluate(req.model_copy(update={"entitlement": m}), facts, now, DEFAULT)
             for m in DEFAULT.bundles[BUNDLE].entitlements]
    assert [m.outcome for m in d.members] == [a.outcome for a in alone]
    order = {Outcome.AUTO_APPROVE: 0, Outcome.NEEDS_APPROVAL: 1, Outcome.DENY: 2}
    assert order[d.outcome] >= max(order[a.outcome] for a in alone)
    assert req.requester not in {a.object_id for a in d.approvers}
    assert req.target not in {a.object_id for a in d.approvers}


def test_a_bundles_closing_is_every_members_end_actions_and_steps_and_the_earliest_warning():
    from policies.closing import closing_for, closing_for_members

    members = [("user-admin", None), ("security-admin", "security-incident")]
    closing = closing_for_members(DEFAULT, members)
    assert closing.on_end == {"revoke_sessions"}  # Security Administrator is tier-0; User Administrator is not
    assert closing_for(DEFAULT, "user-admin", None).on_end == frozenset()
    assert [s.name for s in closing.steps("after_grant")] == ["contain-affected-account"]
    assert closing.warn_before == max(closing_for(DEFAULT, e, lane).warn_before for e, lane in members)


def test_a_new_bundle_widening_tier0_approvers_weakens_the_policy_and_the_shipped_one_does_not():
    from policies.changes import tier0_weakenings

    without = parse_policy(TEXT.replace(SECTION, ""))
    assert tier0_weakenings(without, DEFAULT) == []
    found = tier0_weakenings(DEFAULT, WIDE)
    assert found and all(f.startswith("bundle 'incident-responder': approver group(s)") for f in found)
    assert tier0_weakenings(WIDE, WIDE) == []
