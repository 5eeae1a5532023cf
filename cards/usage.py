"""The usage summary card: the access review of a period (the `report` chat command, the scheduled review)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from cards import layout as lay
from cards.builder import Element, fact, fact_set, render, text
from policies.durations import format_duration

MAX_LINES = 15
MAX_UNUSED = 10


class _Report(Protocol):
    since: Any
    until: Any
    events_read: int
    lines: list[Any]
    unused: list[dict[str, str]]
    names: dict[str, str]

    def rows(self) -> list[dict[str, Any]]: ...


def usage_card(report: _Report, *, title: str, scope: str = "") -> dict[str, Any]:
    rows = report.rows()
    flagged = [r for r in rows if r["flags"]]
    body: list[Element] = [
        lay.header(title, kicker=f"breakglass access review {report.since:%Y-%m-%d} – {report.until:%Y-%m-%d}",
                   badge=f"{len(flagged)} flagged" if flagged else "no flags",
                   badge_color="warning" if flagged else "good"),
        text(f"{len(rows)} person/role line(s), {sum(r['activations'] for r in rows)} activation(s)"
             + (f"; {scope}" if scope else "") + ".", subtle=True),
    ]
    ordered = flagged + [r for r in rows if not r["flags"]]
    for row in ordered[:MAX_LINES]:
        summary = (f"{row['activations']} activation(s), "
                   f"{format_duration(timedelta(minutes=row['total_minutes']))} in all "
                   f"(median {format_duration(timedelta(minutes=row['median_minutes']))}), "
                   f"{row['after_hours_share']:.0%} after hours, {row['denials']} denial(s), "
                   f"{row['auto_approvals']} by rule / {row['human_approvals']} by people, "
                   f"{row['extensions']} extension(s), {row['revoked_early']} revoked early")
        items = [fact("Usage", summary, limit=400)]
        if row["approved_by"]:
            items.append(fact("Approved by", row["approved_by"], limit=300))
        if row["flags"]:
            items.append(fact("Role creep", row["flags"], limit=300))
        body.append(text(f"{row['person_name']}: {row['role_name'] or row['role']}", bold=True, separator=True,
                         color="warning" if row["flags"] else None))
        body.append(fact_set(items))
    if len(ordered) > MAX_LINES:
        body.append(text(f"{len(ordered) - MAX_LINES} more line(s) in the CSV.", subtle=True))
    if report.unused:
        body.append(text("Eligible, never activated (candidates to remove)", bold=True, separator=True))
        body += lay.bullets([f"{u['person_name'] or u['person']}: {u['role_name']} (via {u.get('via', '')})"
                             for u in report.unused[:MAX_UNUSED]])
        if len(report.unused) > MAX_UNUSED:
            body.append(text(f"{len(report.unused) - MAX_UNUSED} more in the CSV.", subtle=True))
    if not rows:
        body.append(text("No activations or denials in the period.", subtle=True))
    return render(body, fallback_text=title)
