"""Channel receipt for a grant, and on-call alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from cards import layout as lay
from cards.builder import Color, ContainerStyle, Element, Fact, container, fact, fact_set, render, text
from policies.durations import format_duration
from policies.record import RequestRecord

Severity = Literal["info", "warning", "critical"]

_SEVERITY: dict[Severity, tuple[Color, ContainerStyle]] = {
    "info": ("accent", "accent"),
    "warning": ("warning", "warning"),
    "critical": ("attention", "attention"),
}


def grant_receipt_card(record: RequestRecord, now: datetime, rollback: str) -> dict[str, Any]:
    body: list[Element] = [
        lay.state_header(record, kicker="Access granted:"),
        fact_set(_receipt_facts(record, now)),
        text("Rollback plan", bold=True, separator=True),
        text(rollback or "No rollback plan recorded.", limit=2000, spacing="small"),
    ]
    return render(body, fallback_text=f"Access granted: {lay.role_name(record)} for {lay.target_name(record)}")


def _receipt_facts(record: RequestRecord, now: datetime) -> list[Fact]:
    r, grant = record.request, record.grant
    facts = [
        fact("Requested by", lay.requester_name(record)),
        fact("Approved by", lay.approved_by(record, now)),
        fact(record.decision.kind_label, lay.role_name(record)),
        fact("For", lay.target_name(record)),
    ]
    if grant is not None:
        facts += [
            fact("Starts", f"{lay.iso(grant.starts_at)} ({lay.clock(grant.starts_at, now)}, "
                           f"{lay.relative(grant.starts_at, now)})"),
            fact("Ends", f"{lay.iso(grant.ends_at)} ({lay.clock(grant.ends_at, now)}, "
                         f"{lay.relative(grant.ends_at, now)})"),
            fact("Grant mode", lay.grant_mode_words(grant) + (" (adopted an existing assignment)"
                                                             if grant.adopted else "")),
        ]
    else:
        facts.append(fact("Starts", "not started yet"))
    facts += [
        fact("Duration", format_duration(r.duration)),
        fact("Ticket", r.ticket or "none"),
        fact("Justification", r.justification, limit=500),
        fact("Request id", record.id),
    ]
    return facts


def ended_card(title: str, facts: list[tuple[str, str]]) -> dict[str, Any]:
    """The approvals channel's notice that a grant ended: who held what, when, how it ended, what followed."""
    body: list[Element] = [lay.header(title, kicker="breakglass"), fact_set([fact(k, v, limit=600) for k, v in facts])]
    return render(body, fallback_text=title)


def alert_card(title: str, facts: list[tuple[str, str]], severity: Severity = "warning",
               details: str = "") -> dict[str, Any]:
    color, style = _SEVERITY[severity]
    items: list[Element] = [lay.header(title, kicker="breakglass alert", badge=severity, badge_color=color)]
    if facts:
        items.append(fact_set([fact(k, v) for k, v in facts]))
    if details:
        items.append(text(details, limit=2000, spacing="small"))
    return render([container(items, style=style)], fallback_text=f"breakglass alert ({severity}): {title}")
