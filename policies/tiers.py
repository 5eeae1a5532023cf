"""Privilege tiers of Entra directory roles, so "more privileged" does not rest on a number someone typed.

Tier 0 roles can take over the tenant (grant themselves or anyone any role, or switch off the controls that would
notice). They outrank every other role whatever `privilege` the policy gives them; within a tier the policy's
`privilege` decides.
"""

from __future__ import annotations

from policies.document import Entitlement
from policies.tier0 import TIER0_ROLE_TEMPLATES

# The one list of tier-0 role templates is policies/tier0.py; this is its set of ids.
TIER0_TEMPLATE_IDS: frozenset[str] = frozenset(TIER0_ROLE_TEMPLATES)


def is_tier0(entitlement: Entitlement) -> bool:
    return (entitlement.role_template_id or "").lower() in TIER0_TEMPLATE_IDS


def privilege_rank(entitlement: Entitlement) -> tuple[int, int]:
    """Comparable rank: tier 0 first, then the policy's privilege number."""
    return (1 if is_tier0(entitlement) else 0, entitlement.privilege)


def more_privileged(candidate: Entitlement, than: Entitlement) -> bool:
    return privilege_rank(candidate) > privilege_rank(than)
