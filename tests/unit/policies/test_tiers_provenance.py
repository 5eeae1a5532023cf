"""Privilege by tier (tier 0 outranks any `privilege` number) and where each submitted field came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.document import Entitlement, parse_policy
from policies.engine import find_ticket_references, longest_for
from policies.provenance import Origin, settle
from policies.tiers import TIER0_TEMPLATE_IDS, is_tier0, more_privileged
from tests.factories import PEOPLE

POLICY = parse_policy((Path(__file__).resolve().parents[3] / "policies" / "default.yaml").read_text())


def ent(template: str, privilege: int) -> Entitlement:
    return Entitlement(id=f"e{privilege}", display_name="x", role_template_id=template, privilege=privilege,
                       max_duration="1h", eligible=["g"])


def test_the_five_tier0_roles() -> None:
    assert len(TIER0_TEMPLATE_IDS) == 5
    tier0 = {e.id for e in POLICY.entitlements if is_tier0(e)}
    assert tier0 == {"global-admin", "security-admin", "conditional-access-admin"}


def test_tier0_outranks_any_privilege_number_and_the_number_decides_within_a_tier() -> None:
    pra = ent("e8611ab8-c189-46e8-94e1-60213ab1f814", 1)  # Privileged Role Administrator, mis-ranked 1
    user = ent("fe930be7-5e62-47db-91af-98c3a49a38b1", 99)  # User Administrator, mis-ranked 99
    assert more_privileged(pra, user) and not more_privileged(user, pra)
    ga = POLICY.entitlement("global-admin")
    ca = POLICY.entitlement("conditional-access-admin")
    assert ga and ca and more_privileged(ga, ca) and not more_privileged(ca, ga) and not more_privileged(ga, ga)


def test_longest_for_is_the_requesters_own_path() -> None:
    ga = POLICY.entitlement("global-admin")
    assert ga is not None
    assert longest_for(POLICY, PEOPLE["sam"], ga).total_seconds() == 3600  # break-glass lane only
    assert longest_for(POLICY, PEOPLE["riley"], ga).total_seconds() == 4 * 3600  # standard path
    assert longest_for(POLICY, PEOPLE["alex"], ga) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("INC00123478", ["INC00123478"]),
    ("inc0012347 and CHG0004567, INC0012347 again", ["INC0012347", "CHG0004567"]),
    ("xINC0012347", []),
    ("INC0012347x", []),
])
def test_ticket_references_are_whole_tokens(text: str, expected: list[str]) -> None:
    assert find_ticket_references(POLICY, text) == expected


PREFILLED = {"entitlement": "helpdesk-admin", "duration_minutes": 60, "justification": "reset it",
             "ticket": "INC0012347", "target": ""}
ORIGINS = {"entitlement": "rules", "duration_minutes": "ai", "justification": "message", "ticket": "rules"}


def test_unchanged_fields_keep_their_origin_and_changed_ones_are_the_persons() -> None:
    p = settle(PREFILLED, ORIGINS, {**PREFILLED, "entitlement": "global-admin"}, asked="helpdesk-admin",
               asked_name="Helpdesk Administrator")
    assert (p.entitlement, p.duration, p.justification, p.ticket, p.target) == (
        Origin.FORM, Origin.AI, Origin.MESSAGE, Origin.RULES, Origin.DEFAULT)
    assert p.by(Origin.AI) == ["duration"]
    assert (p.asked, p.asked_name) == ("helpdesk-admin", "Helpdesk Administrator")


def test_without_a_draft_everything_is_the_persons() -> None:
    p = settle({}, {}, PREFILLED)
    assert all(getattr(p, f) is Origin.FORM for f in ("entitlement", "duration", "justification", "ticket", "target"))


def test_an_unknown_origin_in_the_draft_counts_as_the_persons() -> None:
    p = settle(PREFILLED, {**ORIGINS, "ticket": "approved-by-ciso"}, PREFILLED)
    assert p.ticket is Origin.FORM
