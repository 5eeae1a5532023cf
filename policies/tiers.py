"""Privilege tiers of Entra directory roles, so "more privileged" does not rest on a number someone typed.

Tier 0 roles can take over the tenant (grant themselves or anyone any role, or switch off the controls that would
notice). They outrank every other role whatever `privilege` the policy gives them; within a tier the policy's
`privilege` decides.
"""

from __future__ import annotations

from policies.document import Entitlement

TIER0_TEMPLATE_IDS: frozenset[str] = frozenset({
    "62e90394-69f5-4237-9190-012177145e10",  # Global Administrator
    "e8611ab8-c189-46e8-94e1-60213ab1f814",  # Privileged Role Administrator
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",  # Privileged Authentication Administrator
    "194ae4cb-b126-40b2-bd5b-6091b380977d",  # Security Administrator
    "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",  # Conditional Access Administrator
})


def is_tier0(entitlement: Entitlement) -> bool:
    return entitlement.role_template_id.lower() in TIER0_TEMPLATE_IDS


def privilege_rank(entitlement: Entitlement) -> tuple[int, int]:
    """Comparable rank: tier 0 first, then the policy's privilege number."""
    return (1 if is_tier0(entitlement) else 0, entitlement.privilege)


def more_privileged(candidate: Entitlement, than: Entitlement) -> bool:
    return privilege_rank(candidate) > privilege_rank(than)
