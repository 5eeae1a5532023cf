"""merge: the rules' reading of the person's message first, the model's answer only where the rules found nothing.

The rules read the person's own words deterministically, so what they found is what the message says. The model
may fill a gap (no duration written, no role named) and every value it fills is marked as its own. It never
replaces what the message says: a role the model prefers over the one the message named is kept aside
(`ai_entitlement`) for `prefill` to mention, never pre-selected.
"""

from __future__ import annotations

from services.triage.model import FieldSource, Suggestion

# Suggestion fields the model may fill when the rules found nothing (never the justification: that is the person's).
GAP_FIELDS = ("duration_minutes", "ticket", "target_upn", "severity")


def merge(rules: Suggestion | None, ai: Suggestion | None) -> Suggestion | None:
    if ai is None:
        return rules
    if rules is None:
        return ai
    origins: dict[str, FieldSource] = {k: "rules" for k in ("entitlement", "least_privilege", *GAP_FIELDS)
                                       if getattr(rules, k) is not None}
    origins.update({k: v for k, v in rules.origins.items() if k in origins})
    values: dict[str, object] = {}
    entitlement, ai_entitlement = rules.entitlement, None
    if ai.entitlement is not None:
        if rules.entitlement is None:
            entitlement = ai.entitlement
            origins["entitlement"] = "ai"
        elif ai.entitlement != rules.entitlement:
            ai_entitlement = ai.entitlement
    for field in GAP_FIELDS:
        mine, theirs = getattr(rules, field), getattr(ai, field)
        if mine is None and theirs is not None:
            values[field] = theirs
            origins[field] = "ai"
        else:
            values[field] = mine
    return Suggestion(
        entitlement=entitlement,
        justification=rules.justification,
        least_privilege=rules.least_privilege,  # from the person's words and the policy's task table only
        notes=[*rules.notes, *ai.notes],
        source="llm",
        origins=origins,
        asked=rules.asked if rules.asked is not None else rules.entitlement,
        ai_entitlement=ai_entitlement,
        **values,  # type: ignore[arg-type]
    )
