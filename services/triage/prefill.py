"""prefill: the only path from a Suggestion to the intake form.

Every value is re-checked here against the requester's eligible entitlements and the policy, whatever produced
the suggestion. The result holds form values only; nothing in it can approve, grant or execute anything.
"""

from __future__ import annotations

import re
from datetime import timedelta

from policies.document import MAX_GRANT, Entitlement, PolicyDocument
from policies.durations import format_duration
from policies.engine import ticket_kind
from services.triage.model import PrefillResult, Suggestion
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


def prefill(s: Suggestion | None, eligible: list[Entitlement], policy: PolicyDocument, *,
            raw_text: str) -> PrefillResult:
    limit = policy.justification.max_length
    raw = clean_text(raw_text if isinstance(raw_text, str) else "", limit)
    if s is None:
        return PrefillResult(entitlement=None, duration_minutes=None, justification=raw, ticket="", target="",
                             note=None, dropped=[])
    dropped: list[str] = []
    by_id = {e.id: e for e in eligible}

    chosen: Entitlement | None = None
    if s.entitlement is not None:
        chosen = by_id.get(s.entitlement)
        if chosen is None:
            known = policy.entitlement(s.entitlement)
            if known is not None:
                dropped.append(f"{known.display_name}: you are not eligible to request it.")
            else:
                dropped.append("A suggested role is not an entitlement in the policy.")

    smaller: Entitlement | None = None
    if s.least_privilege is not None:
        hint = by_id.get(s.least_privilege)
        if hint is None:
            known = policy.entitlement(s.least_privilege)
            if known is not None:
                dropped.append(f"Least-privilege hint {known.display_name}: not a role you can request.")
            else:
                dropped.append("A suggested least-privilege role is not an entitlement in the policy.")
        elif chosen is None:
            chosen = hint  # the suggested role was unusable or absent; the smaller role is a safe default
        elif hint.id != chosen.id and hint.privilege < chosen.privilege:
            smaller = hint

    minutes: int | None = None
    if s.duration_minutes is not None:
        cap = max_minutes(chosen)
        minutes = int(s.duration_minutes)
        if minutes < 1:
            dropped.append("Duration: must be at least 1 minute; set to 1 minute.")
            minutes = 1
        elif minutes > cap:
            where = chosen.display_name if chosen else "any role"
            dropped.append(f"Duration: {_fmt(minutes)} is longer than {where} allows; "
                           f"shortened to {_fmt(cap)}.")
            minutes = cap

    ticket = ""
    if s.ticket:
        candidate = s.ticket.strip().upper()
        if ticket_kind(policy, candidate) is not None:
            ticket = candidate
        else:
            shown = f" {candidate}" if _TICKET_SHAPED.match(candidate) else ""
            dropped.append(f"Ticket{shown}: not a recognised ticket number.")

    target = ""
    if s.target_upn:
        candidate = s.target_upn.strip().lower()
        if looks_like_upn(candidate):
            target = candidate
        else:
            dropped.append("Target: not a UPN (name@domain); left empty.")

    justification = clean_text(s.justification or "", limit) or raw

    parts = []
    if chosen is not None:
        parts.append(chosen.display_name)
    if minutes is not None:
        parts.append(_fmt(minutes))
    if ticket:
        parts.append(ticket)
    if target:
        parts.append(f"for {target}")
    note: str | None = None
    if parts:
        lead = "AI-suggested from your message" if s.source == "llm" else "Suggested from your message"
        note = f"{lead}: {', '.join(parts)}"
        if smaller is not None:
            note += f" — {smaller.display_name} would be enough for this task"
    return PrefillResult(entitlement=chosen.id if chosen else None, duration_minutes=minutes,
                         justification=justification, ticket=ticket, target=target, note=note,
                         dropped=dropped)
