"""What counts as weakening a tier-0 rule between two versions of the policy (issue 16, item 4): the pure
comparison the hot reload audits and alerts on."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.changes import tier0_weakenings
from policies.document import parse_policy

TEXT = Path("policies/default.yaml").read_text()
OLD = parse_policy(TEXT)
GA_APPROVAL = "    approval: required                      # always, per the JIT procedure\n"


def edited(old: str, new: str, count: int = 1) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, count)


WEAKER = {
    "approval off": (edited(GA_APPROVAL, "    approval: none\n"), "Global Administrator: approval required → none"),
    "quorum lowered": (edited("    quorum: 1\n", "    quorum: 2\n"), None),  # stronger: checked below
    "longer": (edited("    max_duration: 4h\n", "    max_duration: 8h\n"),
               "Global Administrator: max_duration 4 hours → 8 hours"),
    "eligible widened": (edited("    eligible: [it-admins]\n", "    eligible: [it-admins, service-desk]\n"),
                         "Global Administrator: eligible groups widened (+Service Desk)"),
    "approver added": (edited("      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, "
                              "upn: bo@contoso.example}\n    backup:",
                              "      - {object_id: cccccccc-0000-0000-0000-000000000004, name: Bo Achterberg, "
                              "upn: bo@contoso.example}\n      - {object_id: cccccccc-0000-0000-0000-000000000008, "
                              "name: Alex Novak}\n    backup:"),
                       "Global Administrator: approvers widened (+Alex Novak)"),
    "lane added": (edited("        approvers: [identity-leads]         # otherwise it goes to the on-call identity "
                          "lead\n",
                          "        approvers: [identity-leads]         # otherwise it goes to the on-call identity "
                          "lead\n      - id: desk\n        display_name: Desk\n        eligible: [service-desk]\n"
                          "        max_duration: 30m\n"),
                   "Global Administrator: lane 'desk' added"),
    "lane loosened": (edited("        requires_incident: true             # only with an INC number\n", ""),
                      "Global Administrator: lane 'break-glass' no longer requires an incident"),
    "lane auto-approval loosened": (edited("          max_priority: 1                   #   ...the incident is P1\n",
                                           "          max_priority: 3                   #   ...the incident is P1\n"),
                                    "Global Administrator: lane 'break-glass' approves by rule up to P3 (was P1)"),
    "denylist shrunk": (edited("    - 'svc-*@*'                              # service accounts\n", ""),
                        "denylist shrunk (-svc-*@*)"),
    "target check off": (edited("    request_for_others: [security-ops]      # SecOps may ask for a responder during "
                                "an incident\n",
                                "    request_for_others: [security-ops]      # SecOps may ask for a responder during "
                                "an incident\n    target_must_be_eligible: false\n"),
                         "Security Administrator: target_must_be_eligible true → false"),
}


@pytest.mark.parametrize("case", sorted(WEAKER))
def test_each_weakening_is_named(case):
    text, expected = WEAKER[case]
    found = tier0_weakenings(OLD, parse_policy(text))
    if expected is None:
        assert found == []
    else:
        assert expected in found, found


def test_the_same_policy_and_strengthenings_weaken_nothing():
    assert tier0_weakenings(OLD, OLD) == []
    stricter = parse_policy(edited("    max_duration: 4h\n", "    max_duration: 2h\n"))
    assert tier0_weakenings(OLD, stricter) == []
    assert tier0_weakenings(stricter, OLD) == ["Global Administrator: max_duration 2 hours → 4 hours"]
    two = parse_policy(edited("    quorum: 1\n", "    quorum: 2\n"))
    assert tier0_weakenings(two, OLD) == ["Global Administrator: quorum 2 → 1",
                                          "Global Administrator: lane 'break-glass' quorum 2 → 1"]  # inherited
    no_user_admin_approval = parse_policy(edited("    approval: none\n", "    approval: required\n    "
                                                 "approvers: [identity-leads]\n"))
    assert tier0_weakenings(no_user_admin_approval, OLD) == []  # User Administrator is not tier-0


def test_a_new_tier0_entitlement_is_a_weakening():
    text = TEXT.replace("""  - id: user-admin""", """  - id: pra
    display_name: PRA
    role_template_id: e8611ab8-c189-46e8-94e1-60213ab1f814
    max_duration: 1h
    approvers: [identity-leads]
    eligible: [it-admins]

  - id: user-admin""")
    assert tier0_weakenings(OLD, parse_policy(text)) == [
        "Privileged Role Administrator: now requestable (entitlement 'pra' added)"]
