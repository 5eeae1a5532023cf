"""Issue 20's policy sections: `emergency_accounts:` (always denied, who may tick the checklist), `reviews:` and
`risk:` (identity risk as a fact: above the maximum denies or needs a human; unknown does what the policy says)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.document import PolicyError, parse_policy
from policies.engine import evaluate
from policies.model import Outcome, RiskFact
from tests.factories import PEOPLE, facts, request, ticket

TEXT = Path("policies/default.yaml").read_text()
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
EA = """emergency_accounts:
  accounts:
    - cccccccc-0000-0000-0000-000000000009
    - ea-admin@contoso.example
  alert_on_failed_sign_ins: false
  reviewers: security-ops
  notify:
    - {object_id: cccccccc-0000-0000-0000-000000000006, name: Morgan Ellis}
"""
RISK = """risk:
  max_level: low
  on_exceeded: {exceeded}
  unknown: {unknown}
"""


def with_sections(*sections: str) -> str:
    text = TEXT
    for section in sections:
        head = section.split(":", 1)[0] + ":"
        start = text.find("\n" + head)
        if start >= 0:  # replace the shipped section of the same name
            end = text.find("\n\n", start + 1)
            end = len(text) if end < 0 else end
            text = text[:start + 1] + section.rstrip("\n") + text[end:]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    return text


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "broken.yaml")
    return [p.render("broken.yaml") for p in err.value.problems]


def rule(decision, name):
    return [r for r in decision.rules if r.rule == name]


def test_emergency_accounts_parse_by_object_id_and_upn():
    doc = parse_policy(with_sections(EA))
    ea = doc.emergency_accounts
    assert ea.accounts == ["cccccccc-0000-0000-0000-000000000009", "ea-admin@contoso.example"]
    assert ea.alert_on_failed_sign_ins is False
    assert ea.reviewers == "security-ops"
    assert ea.matches("CCCCCCCC-0000-0000-0000-000000000009", "") and ea.matches("x", "EA-Admin@contoso.example")
    assert not ea.matches(PEOPLE["riley"].object_id, PEOPLE["riley"].upn)


def test_failed_sign_ins_alert_by_default():
    doc = parse_policy(with_sections(EA.replace("  alert_on_failed_sign_ins: false\n", "")))
    assert doc.emergency_accounts.alert_on_failed_sign_ins is True


@pytest.mark.parametrize("old,new,expected", [
    ("    - ea-admin@contoso.example", "    - ea-admin", "emergency_accounts.accounts[1]: must be an Entra object id"),
    ("  reviewers: security-ops", "  reviewers: sec-ops", "emergency_accounts.reviewers: unknown group 'sec-ops'"),
    ("  reviewers: security-ops\n", "",
     "emergency_accounts.reviewers: emergency accounts are listed but nobody may tick their post-use checklist"),
])
def test_broken_emergency_sections_are_explained(old, new, expected):
    lines = problems_of(with_sections(EA).replace(old, new, 1))
    assert any(expected in line for line in lines), lines
    assert all(line.startswith("broken.yaml:") and line.split(":")[1].isdigit() for line in lines)


@pytest.mark.parametrize("target", ["breakglass", "svc"])
def test_an_emergency_account_is_never_elevated_even_off_the_denylist(target):
    # The shipped denylist names breakglass01 by object id; with it emptied, the emergency list alone still denies.
    text = with_sections(EA.replace("ea-admin@contoso.example", "svc-backup@contoso.example"),
                         "denylist:\n  object_ids: []\n  upn_patterns: []\n")
    policy = parse_policy(text)
    req = request("jordan", target=target, entitlement="security-admin", ticket_ref="INC0012346",
                  justification="Contain the token theft on the mail tenant, INC0012346", at=NOW)
    incident = ticket("INC0012346", caller="jordan@contoso.example")
    d = evaluate(req, facts("jordan", target=target, ticket_facts=incident), NOW, policy)
    assert d.outcome is Outcome.DENY
    hit = rule(d, "target.emergency_account")
    assert hit and not hit[0].passed and "emergency access account" in hit[0].reason


def test_an_ordinary_target_passes_the_emergency_rule(policy):
    req = request("sam", at=NOW)
    d = evaluate(req, facts("sam", ticket_facts=ticket()), NOW, parse_policy(with_sections(EA)))
    assert rule(d, "target.emergency_account")[0].passed


def test_reviews_section():
    doc = parse_policy(with_sections("reviews:\n  every: 90d\n  channel: approvals\n  max_activations_per_30d: 6\n"))
    assert doc.reviews.every.days == 90 and doc.reviews.channel == "approvals"
    assert doc.reviews.max_activations_per_30d == 6
    lines = problems_of(with_sections("reviews:\n  every: 90d\n  channel: general\n"))
    assert any("reviews.channel" in line for line in lines), lines


@pytest.mark.parametrize("exceeded,outcome", [("deny", Outcome.DENY), ("require_approval", Outcome.NEEDS_APPROVAL)])
def test_risk_above_the_maximum_denies_or_needs_a_human(exceeded, outcome):
    policy = parse_policy(with_sections(RISK.format(exceeded=exceeded, unknown="allow")))
    req = request("riley", entitlement="user-admin", minutes=60, ticket_ref="INC0012347",
                  justification="Offboard the contractor accounts listed in INC0012347", at=NOW)
    f = facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example"),
              requester_risk=RiskFact(level="medium", state="atRisk"), target_risk=RiskFact(level="medium",
                                                                                           state="atRisk"))
    d = evaluate(req, f, NOW, policy)
    assert d.outcome is outcome
    found = rule(d, "risk.requester")[0]
    assert not found.passed and "medium" in found.reason and "atRisk" in found.reason
    assert "identity_risk" in d.flags


def test_risk_at_or_below_the_maximum_passes_and_says_so():
    policy = parse_policy(with_sections(RISK.format(exceeded="deny", unknown="deny")))
    req = request("riley", entitlement="user-admin", minutes=60, ticket_ref="INC0012347",
                  justification="Offboard the contractor accounts listed in INC0012347", at=NOW)
    f = facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example"),
              requester_risk=RiskFact(level="none", detail="never flagged"), target_risk=RiskFact(level="low"))
    d = evaluate(req, f, NOW, policy)
    assert d.outcome is Outcome.AUTO_APPROVE
    assert rule(d, "risk.requester")[0].passed and "none" in rule(d, "risk.requester")[0].reason


@pytest.mark.parametrize("unknown,outcome", [("allow", Outcome.AUTO_APPROVE), ("require_approval",
                                                                              Outcome.NEEDS_APPROVAL),
                                            ("deny", Outcome.DENY)])
def test_unknown_risk_does_what_the_policy_says(unknown, outcome):
    policy = parse_policy(with_sections(RISK.format(exceeded="deny", unknown=unknown)))
    req = request("riley", entitlement="user-admin", minutes=60, ticket_ref="INC0012347",
                  justification="Offboard the contractor accounts listed in INC0012347", at=NOW)
    # No risk facts at all (as `policy explain` without them) is unknown too.
    for f in (facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example"),
                    requester_risk=RiskFact(level="unknown", detail="no Entra ID P2 licence")),
              facts("riley", ticket_facts=ticket("INC0012347", caller="riley@contoso.example"))):
        d = evaluate(req, f, NOW, policy)
        assert d.outcome is outcome, d.reasons
        reason = rule(d, "risk.requester")[0].reason
        assert "unknown" in reason


def test_no_risk_section_means_no_risk_rule():
    text = TEXT[:TEXT.index("\n# Identity risk")]
    policy = parse_policy(text)
    assert policy.risk is None
    req = request("sam", at=NOW)
    d = evaluate(req, facts("sam", ticket_facts=ticket(), requester_risk=RiskFact(level="high")), NOW, policy)
    assert not [r for r in d.rules if r.rule.startswith("risk.")]


def test_risk_fact_from_graph_rows():
    assert RiskFact.from_row(None).level == "none"
    assert RiskFact.from_row({"riskLevel": "medium", "riskState": "atRisk"}).level == "medium"
    # Rows stay after remediation or dismissal: not risky now.
    assert RiskFact.from_row({"riskLevel": "high", "riskState": "remediated"}).level == "none"
    assert RiskFact.from_row({"riskLevel": "low", "riskState": "confirmedCompromised"}).level == "high"
    assert RiskFact.from_row({"riskLevel": "hidden", "riskState": "atRisk"}).level == "unknown"
