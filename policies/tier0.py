"""Tier-0 directory roles: the Entra roles that can take over the tenant (grant themselves any role, change how
everyone signs in, or switch off the controls). Identified by role TEMPLATE id, the well-known constant that is the
same in every tenant (Microsoft Entra built-in roles reference), never by a display name a policy file chooses."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

TIER0_ROLE_TEMPLATES: Mapping[str, str] = MappingProxyType({
    "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
    "e8611ab8-c189-46e8-94e1-60213ab1f814": "Privileged Role Administrator",
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
    "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
    "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9": "Conditional Access Administrator",
})


def tier0_name(role_template_id: str | None) -> str | None:
    """The role's name when it is tier-0, else None (a group entitlement has no role template)."""
    return TIER0_ROLE_TEMPLATES.get(role_template_id.lower()) if role_template_id else None
