"""Requests for someone else and ticket numbers (issue 16, item 14).

Whoever asks for someone else, the person who would receive the role must themselves be eligible for the path the
request takes (the lane's eligible groups on a lane, the entitlement's otherwise), unless the entitlement says
`target_must_be_eligible: false`. Ticket numbers are ASCII: `\\d` in a policy pattern never matches Arabic-Indic,
full-width or other Unicode digits.
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.document import PolicyDocument, parse_policy
from policies.engine import evaluate, find_ticket_reference, ticket_kind
from policies.model import Facts, GrantRequest, Outcome
from tests.factories import PEOPLE, facts, request, ticket

TEXT = Path("policies/default.yaml").read_text()
DEFAULT = parse_policy(TEXT)
MONDAY_10_BERLIN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVERYONE = "[it-admins, identity-oncall, security-ops, service-desk]"


def everyone_may_ask_for_others(text: str) -> str:
    """Every entitlement may be requested for others by every group, so the target check is exercised widely."""
    out = []
    for line in text.splitlines(keepends=True):
        out.append(line)
        if line.startswith("    role_template_id:"):
            out.append(f"    request_for_others: {EVERYONE}\n")
    return "".join(out).replace("    request_for_others: [security-ops]      # SecOps may ask for a responder "
                                "during an incident\n", "")


@functools.cache
def wide() -> PolicyDocument:
    return parse_policy(everyone_may_ask_for_others(TEXT))


@functools.cache
def wide_unchecked() -> PolicyDocument:
    text = everyone_may_ask_for_others(TEXT).replace(
        f"    request_for_others: {EVERYONE}\n",
        f"    request_for_others: {EVERYONE}\n    target_must_be_eligible: false\n")
    return parse_policy(text)


def eligible_for_path(policy: PolicyDocument, decision_lane: str | None, entitlement: str, target: str) -> bool:
    ent = policy.entitlement(entitlement)
    assert ent is not None
    keys = next(la.eligible for la in ent.lanes if la.id == decision_lane) if decision_lane else ent.eligible
    return bool(policy.group_ids(keys) & PEOPLE[target].groups)


people = st.sampled_from(sorted(PEOPLE))
entitlements = st.sampled_from([e.id for e in DEFAULT.entitlements])
moments = st.datetimes(min_value=datetime(2026, 11, 23), max_value=datetime(2026, 11, 28),
                       timezones=st.just(UTC))


@st.composite
def for_others(draw):
    requester, target = draw(people), draw(people)
    now = draw(moments)
    ref = draw(st.sampled_from(["INC0012346", "CHG0001234", None]))
    entitlement = draw(entitlements)
    req = GrantRequest(id="BG-PROP02", requester=PEOPLE[requester].object_id, target=PEOPLE[target].object_id,
                       entitlement=entitlement, duration=timedelta(minutes=draw(st.integers(1, 240))),
                       justification="Contain suspected token theft on the finance mailbox, INC0012346",
                       ticket=ref, created_at=now)
    tfacts = ticket(ref, caller=PEOPLE[requester].upn, priority=draw(st.integers(1, 4))) if ref else None
    return req, Facts(requester=PEOPLE[requester], target=PEOPLE[target], ticket=tfacts), now, requester, target


@PROPS
@given(for_others())
def test_a_target_outside_the_eligible_groups_is_never_granted(case):
    req, f, now, _requester, target = case
    decision = evaluate(req, f, now, wide())
    if req.for_someone_else and decision.outcome is not Outcome.DENY:
        assert eligible_for_path(wide(), decision.lane, req.entitlement, target), decision
    if req.for_someone_else and not eligible_for_path(wide(), decision.lane, req.entitlement, target):
        assert decision.outcome is Outcome.DENY
        failing = [r for r in decision.rules if r.rule == "target.eligible"]
        assert failing and not failing[0].passed and failing[0].blocks


@PROPS
@given(for_others())
def test_the_policy_can_switch_the_target_check_off(case):
    req, f, now, _requester, _target = case
    decision = evaluate(req, f, now, wide_unchecked())
    assert not [r for r in decision.rules if r.rule == "target.eligible"]


def test_secops_may_not_give_security_administrator_to_the_service_desk():
    req = request("morgan", target="alex", entitlement="security-admin", ticket_ref="INC0012346", minutes=60,
                  justification="Contain suspected token theft on the finance mailbox, INC0012346",
                  at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("morgan", target="alex",
                                   ticket_facts=ticket("INC0012346", caller="morgan@contoso.example")),
                        MONDAY_10_BERLIN, DEFAULT)
    assert decision.outcome is Outcome.DENY
    assert any("Alex Novak is not in a group eligible" in r for r in decision.reasons), decision.reasons


def test_the_demo_responder_is_eligible_so_scenario_two_still_passes():
    req = request("morgan", target="jordan", entitlement="security-admin", ticket_ref="INC0012346", minutes=60,
                  justification="Contain suspected token theft on the finance mailbox, INC0012346",
                  at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("morgan", target="jordan",
                                   ticket_facts=ticket("INC0012346", caller="morgan@contoso.example")),
                        MONDAY_10_BERLIN, DEFAULT)
    assert decision.outcome is Outcome.AUTO_APPROVE, decision.reasons
    assert next(r for r in decision.rules if r.rule == "target.eligible").passed


# --- ticket numbers are ASCII ---------------------------------------------------------------------------------

NON_ASCII_DIGITS = [chr(c) for c in range(0x80, 0x30000) if unicodedata.category(chr(c)) == "Nd"]
foreign_digits = st.lists(st.sampled_from(NON_ASCII_DIGITS), min_size=4, max_size=10).map("".join)
ascii_digits = st.text(alphabet="0123456789", min_size=7, max_size=7)


@PROPS
@given(st.sampled_from(["INC", "CHG", "RITM", "SR", "INC-", "SR-"]), foreign_digits, ascii_digits)
def test_ticket_numbers_take_ascii_digits_only(prefix, foreign, plain):
    policy = DEFAULT
    assert ticket_kind(policy, prefix + foreign) is None
    assert find_ticket_reference(policy, f"P1 outage, see {prefix}{foreign} for details") is None
    mixed = plain[:3] + foreign[0] + plain[3:]
    assert ticket_kind(policy, prefix + mixed) is None
    assert ticket_kind(policy, prefix + plain) is not None
    assert find_ticket_reference(policy, f"P1 outage, see {prefix}{plain} now") == (prefix + plain).upper()


def test_arabic_indic_incident_number_is_not_a_ticket():
    number = "INC" + "٠٠١٢٣٤٦"  # Arabic-Indic 0012346
    assert ticket_kind(DEFAULT, number) is None
    req = request("riley", ticket_ref=number, at=MONDAY_10_BERLIN)
    decision = evaluate(req, facts("riley"), MONDAY_10_BERLIN, DEFAULT)
    assert decision.outcome is Outcome.DENY
    assert any("is not a recognised ticket number" in r for r in decision.reasons)
