"""What happens around the end of a grant, as policy data: `on_end` (sessions end with the role; on by default for
the tier-0 roles), `runbooks` (named steps attached at after_grant / before_revoke / after_revoke) and
`warn_before` (the holder's expiry warning)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from policies.closing import closing_for
from policies.document import PolicyError, parse_policy, review_policy

TEXT = Path("policies/default.yaml").read_text()
CA_ADMIN = """  - id: conditional-access-admin
    display_name: Conditional Access Administrator
    role_template_id: b1be1c3e-b65d-4f19-8427-f6fa0d97feb9
    privilege: 70
    max_duration: 4h
"""
USER_ADMIN = """  - id: user-admin
    display_name: User Administrator
    role_template_id: fe930be7-5e62-47db-91af-98c3a49a38b1
    privilege: 40
    max_duration: 8h
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "broken.yaml")
    return [p.render("broken.yaml") for p in err.value.problems]


def with_runbooks(text: str, runbooks: str) -> str:
    assert "\nrunbooks:\n" in text
    return text.replace("\nrunbooks:\n", f"\nrunbooks:\n{runbooks}", 1)


def test_tier0_roles_revoke_sessions_at_the_end_by_default_and_others_do_not():
    doc = parse_policy(TEXT)
    for ent in ("global-admin", "security-admin", "conditional-access-admin"):
        assert closing_for(doc, ent, None).on_end == frozenset({"revoke_sessions"}), ent
    for ent in ("user-admin", "helpdesk-admin"):
        assert closing_for(doc, ent, None).on_end == frozenset(), ent
    assert closing_for(doc, "global-admin", "break-glass").on_end == frozenset({"revoke_sessions"})


def test_on_end_can_be_set_per_entitlement_and_lane():
    text = TEXT.replace(USER_ADMIN, USER_ADMIN + "    on_end: [revoke_sessions]\n")
    text = text.replace(CA_ADMIN, CA_ADMIN + "    on_end: []\n")
    text = text.replace("        approvers: [identity-leads]         # otherwise",
                        "        on_end: []\n        approvers: [identity-leads]         # otherwise")
    doc, risks = review_policy(text, "p.yaml")
    assert closing_for(doc, "user-admin", None).on_end == frozenset({"revoke_sessions"})
    assert closing_for(doc, "conditional-access-admin", None).on_end == frozenset()
    assert closing_for(doc, "global-admin", "break-glass").on_end == frozenset()
    assert closing_for(doc, "global-admin", None).on_end == frozenset({"revoke_sessions"})
    # Switching it off for a tier-0 role is allowed, and warned about (policy check --strict fails on it).
    warned = [r.render("p.yaml") for r in risks]
    assert any("conditional-access-admin" not in w and "Conditional Access Administrator" in w and "sessions" in w
               for w in warned), warned
    assert any("break-glass" in w and "sessions" in w for w in warned), warned


def test_an_unknown_on_end_action_is_an_error():
    lines = problems_of(TEXT.replace(USER_ADMIN, USER_ADMIN + "    on_end: [wipe_device]\n"))
    assert any("entitlements[3].on_end[0]" in line for line in lines), lines


def test_runbook_steps_attach_to_entitlements_and_lanes_by_phase():
    text = with_runbooks(TEXT, "  page-soc:\n    kind: webhook\n    endpoint: soar\n    timeout: 5s\n    attempts: 2\n"
                               "  end-my-sessions:\n    kind: revoke_sessions\n    subject: grantee\n")
    text = text.replace(USER_ADMIN, USER_ADMIN + "    runbooks:\n      after_grant: [page-soc]\n"
                                                 "      after_revoke: [end-my-sessions, page-soc]\n")
    doc = parse_policy(text)
    closing = closing_for(doc, "user-admin", None)
    assert [s.name for s in closing.steps("after_grant")] == ["page-soc"]
    assert closing.steps("before_revoke") == []
    assert [s.name for s in closing.steps("after_revoke")] == ["end-my-sessions", "page-soc"]
    soar = closing.steps("after_grant")[0].step
    assert soar.kind == "webhook" and soar.endpoint == "soar" and soar.timeout == timedelta(seconds=5)
    assert soar.attempts == 2


def test_the_shipped_security_incident_lane_contains_the_affected_account_after_the_grant():
    doc = parse_policy(TEXT)
    steps = closing_for(doc, "security-admin", "security-incident").steps("after_grant")
    assert [(s.step.kind, s.step.subject) for s in steps] == [("revoke_sessions", "affected_account")]
    assert closing_for(doc, "security-admin", None).steps("after_grant") == []


@pytest.mark.parametrize("runbooks,attach,expected", [
    ("  a:\n    kind: webhook\n", "after_grant: [a]", "runbooks.a: a webhook step needs an endpoint"),
    ("  a:\n    kind: revoke_sessions\n", "after_grant: [a]", "runbooks.a: a revoke_sessions step needs a subject"),
    ("  a:\n    kind: webhook\n    endpoint: soar\n    subject: grantee\n", "after_grant: [a]",
     "runbooks.a: only a revoke_sessions step has a subject"),
    ("  a:\n    kind: revoke_sessions\n    subject: grantee\n    endpoint: soar\n", "after_grant: [a]",
     "runbooks.a: only a webhook step has an endpoint"),
    ("  a:\n    kind: revoke_sessions\n    subject: somebody\n", "after_grant: [a]", "runbooks.a.subject"),
    ("  a:\n    kind: webhook\n    endpoint: soar\n    timeout: 5m\n", "after_grant: [a]",
     "runbooks.a.timeout: must be between 1s and 60s"),
    ("  a:\n    kind: webhook\n    endpoint: https://x.example/hook\n", "after_grant: [a]", "runbooks.a.endpoint"),
    ("  a:\n    kind: webhook\n    endpoint: soar\n", "after_grant: [b]",
     "entitlements[3].runbooks.after_grant[0]: unknown runbook step 'b'"),
    ("  a:\n    kind: webhook\n    endpoint: soar\n", "during: [a]", "entitlements[3].runbooks.during"),
])
def test_broken_runbooks_are_explained(runbooks, attach, expected):
    text = with_runbooks(TEXT, runbooks).replace(USER_ADMIN, USER_ADMIN + f"    runbooks:\n      {attach}\n")
    lines = problems_of(text)
    assert any(expected in line for line in lines), lines
    assert all(line.startswith("broken.yaml:") for line in lines)


def test_warn_before_defaults_to_ten_minutes_and_can_be_changed_or_switched_off():
    doc = parse_policy(TEXT)
    assert closing_for(doc, "global-admin", None).warn_before == timedelta(minutes=10)
    text = TEXT.replace(USER_ADMIN, USER_ADMIN + "    warn_before: 15m\n")
    text = text.replace(CA_ADMIN, CA_ADMIN + "    warn_before: 0\n")
    doc = parse_policy(text)
    assert closing_for(doc, "user-admin", None).warn_before == timedelta(minutes=15)
    assert closing_for(doc, "conditional-access-admin", None).warn_before == timedelta(0)
    lines = problems_of(TEXT.replace(USER_ADMIN, USER_ADMIN + "    warn_before: -5m\n"))
    assert any("entitlements[3].warn_before" in line for line in lines), lines


def test_the_expiry_warning_is_only_for_grants_at_least_twice_as_long():
    closing = closing_for(parse_policy(TEXT), "global-admin", None)
    assert closing.warns(timedelta(minutes=20)) and closing.warns(timedelta(hours=1))
    assert not closing.warns(timedelta(minutes=19, seconds=59)) and not closing.warns(timedelta(minutes=5))
