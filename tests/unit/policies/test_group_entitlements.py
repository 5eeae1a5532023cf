"""`kind: group` entitlements in the policy file: what they must name, what they may not, the cleaned display
name, and the decision that carries the group to the grant."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from policies.assignable import Assignable, AssignableKind
from policies.document import PolicyError, parse_policy
from policies.engine import evaluate
from policies.model import Facts, GrantRequest, Principal
from tests.unit.cards.factory import CREATED

TEXT = Path("policies/default.yaml").read_text()
MARKER = "\n# Bundles: several entitlements"
GROUP = "22222222-0000-0000-0000-000000000001"
HOSTILE = "Exchange\u202e Admins\u200b [x](https://evil.example)\nline two"


def with_entitlement(block: str) -> str:
    return TEXT.replace(MARKER, "\n" + block.rstrip() + "\n" + MARKER, 1)


def group_block(*, extra: str = "", access: str = "member", name: str = "Exchange Admins (JIT)",
                ident: str = "exchange-admins") -> str:
    return (f"  - id: {ident}\n    kind: group\n    display_name: {json.dumps(name)}\n    group_id: {GROUP}\n"
            f"    access: {access}\n    max_duration: 2h\n    approval: none\n    eligible: [it-admins]\n{extra}")


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.yaml")
    return [p.message for p in err.value.problems]


def test_a_group_entitlement_parses_and_names_its_group_and_access():
    doc = parse_policy(with_entitlement(group_block(access="owner")))
    ent = doc.entitlement("exchange-admins")
    assert ent is not None and ent.kind == "group" and ent.role_template_id is None
    target = ent.assignable()
    assert target == Assignable(kind=AssignableKind.GROUP, object_id=GROUP, scope="owner",
                                display_name="Exchange Admins (JIT)")
    assert target.describe() == "Exchange Admins (JIT) (group owner)" and target.kind_label() == "Group ownership"
    assert target.ledger_key("CCCC") == ("cccc", f"group:{GROUP}", "owner")
    # A role keeps the ledger key it always had.
    assert doc.entitlement("global-admin").assignable().ledger_key("x")[1:] == (
        "62e90394-69f5-4237-9190-012177145e10", "/")


@pytest.mark.parametrize("block,expected", [
    (group_block().replace(f"    group_id: {GROUP}\n", ""), "a group entitlement needs group_id"),
    (group_block(extra="    role_template_id: 62e90394-69f5-4237-9190-012177145e10\n"),
     "role_template_id is for kind: role"),
    (group_block(extra="    scope: /administrativeUnits/x\n"), "scope is for directory roles"),
    (group_block(access="admin"), "Input should be 'member' or 'owner'"),
    (group_block().replace("kind: group", "kind: role"), "a role entitlement needs role_template_id"),
])
def test_a_group_entitlement_that_names_the_wrong_things_is_refused(block, expected):
    assert any(expected in p for p in problems(with_entitlement(block))), problems(with_entitlement(block))


def test_the_same_group_access_twice_is_refused_but_member_and_owner_may_coexist():
    both = group_block() + "\n" + group_block(access="owner", ident="exchange-owners")
    assert parse_policy(with_entitlement(both)).entitlement("exchange-owners") is not None
    twice = group_block() + "\n" + group_block(ident="exchange-again")
    assert any("group membership already used by entitlements[5]" in p for p in problems(with_entitlement(twice)))


def test_a_hostile_display_name_is_cleaned_once_when_the_policy_is_read():
    doc = parse_policy(with_entitlement(group_block(name=HOSTILE)))
    name = doc.entitlement("exchange-admins").display_name
    assert "\u202e" not in name and "\u200b" not in name and "\n" not in name
    assert name == "Exchange Admins [x](https://evil.example) line two"  # cards and notes encode the rest


def test_the_decision_carries_the_group_to_the_grant():
    doc = parse_policy(with_entitlement(group_block()))
    riley = Principal(object_id="cccccccc-0000-0000-0000-000000000001", upn="riley@contoso.example",
                      groups=frozenset({"11111111-0000-0000-0000-000000000001"}))
    request = GrantRequest(id="r1", requester=riley.object_id, target=riley.object_id, entitlement="exchange-admins",
                           duration=timedelta(hours=1), ticket="INC0012347",
                           justification="Move the finance mailboxes to the new retention policy",
                           created_at=CREATED)
    decision = evaluate(request, Facts(requester=riley, target=riley), CREATED, doc)
    assert decision.target is not None and decision.target.is_group and decision.role_definition_id == ""
    assert decision.entitlement_name == "Exchange Admins (JIT) (group member)"
    assert decision.kind_label == "Group membership"
    assert decision.assignable() == decision.target
