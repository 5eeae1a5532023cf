"""prefill: the only path from a Suggestion to the intake form.

Every value is re-checked here against the requester's eligible entitlements, the longest grant they can actually
get and the policy, whatever produced the suggestion. The justification is always the person's own message. Each
value carries where it came from (the message, the rules, the model), so the card can mark what the model chose.
The result holds form values only; nothing in it can approve, grant or execute anything.
"""

from __future__ import annotations

import re
from datetime import timedelta

from policies.document import MAX_GRANT, Entitlement, PolicyDocument
from policies.durations import format_duration
from policies.engine import longest_for, ticket_kind
from policies.model import Principal
from policies.tiers import more_privileged
from services.triage.model import FieldSource, PrefillResult, Suggestion
from services.triage.text import clean_text, looks_like_upn

# A rejected ticket is echoed back only when it is ticket-shaped ("INC12"), never as arbitrary words.
_TICKET_SHAPED = re.compile(r"^[A-Z]{0,6}-?\d{1,12}$")


def _fmt(minutes: int) -> str:
    if minutes > 10**8:
        return f"{minutes} minutes"
    return format_duration(timedelta(minutes=minutes))


def max_minutes(entitlement: Entitlement | None) -> int:
    """Longest grant in whole minutes: the larger of the standard path and any lane (24h without a role)."""
    if entitlement is None:
        longest = MAX_GRANT
    else:
        longest = max([entitlement.max_duration, *(lane.max_duration for lane in entitlement.lanes)])
    return max(1, int(longest.total_seconds() // 60))


def longest_minutes(policy: PolicyDocument, eligible: list[Entitlement],
                    requester: Principal | None) -> dict[str, int]:
    """Entitlement id -> the longest grant this requester can get (their lane, not the role's general maximum)."""
    out: dict[str, int] = {}
    for e in eligible:
        longest = longest_for(policy, requester, e) if requester is not None else None
        out[e.id] = max(1, int(longest.total_seconds() // 60)) if longest is not None else max_minutes(e)
    return out


def _not_eligible(entitlement: Entitlement) -> str:
    return f"{entitlement.display_name} was not pre-selected: you are not eligible to request it."


def _bundle(s: Suggestion, policy: PolicyDocument, by_id: dict[str, Entitlement]) -> tuple[str | None, str | None]:
    """The suggested bundle if it may be pre-selected, else a sentence why not. Validated like a role and never
    widening: every member must be one the requester may ask for, and only the person's own words (the rules found
    the bundle's name or exactly its roles in the message) pre-select one; a model's bundle is only mentioned."""
    if s.bundle is None:
        return None, None
    bundle = policy.bundle(s.bundle)
    if bundle is None:
        return None, "A suggested bundle is not in the policy; it was ignored."
    name = policy.bundle_name(s.bundle)
    if any(m not in by_id for m in bundle.entitlements):
        return None, f"The {name} bundle was not pre-selected: you are not eligible for every role in it."
    if s.origin("bundle") == "ai":
        return None, (f"AI suggested the {name} bundle; not pre-selected: a bundle grants several roles, so choose "
                      "it yourself if you need them all.")
    return s.bundle, None


def prefill(s: Suggestion | None, eligible: list[Entitlement], policy: PolicyDocument, *,
            raw_text: str, requester: Principal | None = None) -> PrefillResult:
    limit = policy.justification.max_length
    raw = clean_text(raw_text if isinstance(raw_text, str) else "", limit)
    own: dict[str, FieldSource] = {"justification": "message"} if raw else {}
    if s is None:
        return PrefillResult(entitlement=None, duration_minutes=None, justification=raw, ticket="", target="",
                             origins=own)
    dropped: list[str] = []
    by_id = {e.id: e for e in eligible}
    longest = longest_minutes(policy, eligible, requester)
    asked = policy.entitlement(s.asked) if s.asked else None

    chosen: Entitlement | None = None
    chosen_from: FieldSource = s.origin("entitlement")
    aside: Entitlement | None = policy.entitlement(s.ai_entitlement) if s.ai_entitlement else None
    if s.entitlement is not None:
        candidate = by_id.get(s.entitlement)
        known = policy.entitlement(s.entitlement)
        if known is None:
            dropped.append("A suggested role is not in the policy; it was ignored.")
        elif candidate is None:
            dropped.append(_not_eligible(known))
        elif chosen_from == "ai" and asked is not None and more_privileged(candidate, asked):
            aside = candidate  # never pre-select more than the message asked for
        else:
            chosen = candidate

    smaller: Entitlement | None = None
    if s.least_privilege is not None:
        hint = by_id.get(s.least_privilege)
        known = policy.entitlement(s.least_privilege)
        if known is None:
            dropped.append("A suggested least-privilege role is not in the policy; it was ignored.")
        elif hint is None:
            dropped.append(f"{known.display_name} would be enough for this task, but you cannot request it.")
        elif chosen is None:
            # The named role is unusable: the smaller role the rules found for the task is a safe default.
            chosen, chosen_from = hint, s.origin("least_privilege")
        elif hint.id != chosen.id and more_privileged(chosen, hint):
            smaller = hint

    if aside is not None and (chosen is None or aside.id != chosen.id):
        above_asked = asked is not None and more_privileged(aside, asked)
        if aside.id not in by_id:
            dropped.append(f"AI suggested {aside.display_name}; not pre-selected: you are not eligible to request it.")
        elif chosen is None and not above_asked:
            chosen, chosen_from = aside, "ai"  # what the message asked for is unusable; the model's is no bigger
        elif asked is not None:
            dropped.append(f"AI suggested {aside.display_name}; not pre-selected, because your message asked for "
                           f"{asked.display_name}" + (", which is less privileged." if above_asked else "."))

    bundle, bundle_note = _bundle(s, policy, by_id)
    if bundle_note:
        dropped.append(bundle_note)
    minutes: int | None = None
    if s.duration_minutes is not None:
        cap = longest[chosen.id] if chosen is not None and chosen.id in longest else (
            max(longest.values()) if requester is not None and longest else max_minutes(chosen))
        if bundle is not None:  # the longest this requester can get for every member
            cap = min(longest[m] for m in policy.bundles[bundle].entitlements)
        minutes = int(s.duration_minutes)
        if minutes < 1:
            dropped.append("The duration must be at least 1 minute; it was set to 1 minute.")
            minutes = 1
        elif minutes > cap:
            whose = f" {policy.bundle_name(bundle)} for" if bundle is not None else (
                f" {chosen.display_name} for" if chosen is not None else "")
            dropped.append(f"The duration {_fmt(minutes)} was shortened to {_fmt(cap)}, the longest you can "
                           f"get{whose}.")
            minutes = cap

    ticket = ""
    if s.ticket:
        candidate_ticket = s.ticket.strip().upper()
        if ticket_kind(policy, candidate_ticket) is not None:
            ticket = candidate_ticket
        else:
            shown = f" {candidate_ticket}" if _TICKET_SHAPED.match(candidate_ticket) else ""
            dropped.append(f"The ticket{shown} is not a recognised ticket number; it was left empty.")

    target = ""
    if s.target_upn:
        candidate_target = s.target_upn.strip().lower()
        if looks_like_upn(candidate_target):
            target = candidate_target
        else:
            dropped.append("The suggested target is not a sign-in name (name@domain); it was left empty.")

    origins = dict(own)
    parts: dict[str, list[str]] = {"rules": [], "ai": []}

    def mark(field: str, source: FieldSource, words: str) -> None:
        origins[field] = source
        parts["ai" if source == "ai" else "rules"].append(words)

    if bundle is not None:
        mark("entitlement", s.origin("bundle"), f"the {policy.bundle_name(bundle)} bundle")
    elif chosen is not None:
        mark("entitlement", chosen_from, chosen.display_name)
    if minutes is not None:
        mark("duration_minutes", s.origin("duration_minutes"), _fmt(minutes))
    if ticket:
        mark("ticket", s.origin("ticket"), ticket)
    if target:
        mark("target", s.origin("target_upn"), f"for {target}")

    notes: list[str] = []
    if parts["rules"]:
        notes.append(f"Suggested from your message: {', '.join(parts['rules'])}.")
    if parts["ai"]:
        notes.append(f"Suggested by AI (check before you submit): {', '.join(parts['ai'])}.")
    if smaller is not None:
        notes.append(f"{smaller.display_name} would be enough for this task.")
    notes.extend(dropped)
    return PrefillResult(entitlement=bundle or (chosen.id if chosen else None), duration_minutes=minutes,
                         justification=raw, ticket=ticket, target=target, origins=origins,
                         asked=asked.id if asked else None, notes=notes, dropped=dropped)
