"""The request card's account of where its terms came from, so the approver knows what the requester wrote, what
a model chose, and when the role differs from what the message asked for. It says what the audit's
`request.triaged` says (`changed_by_human`), from the provenance stored on the request."""

from __future__ import annotations

from cards import layout as lay
from cards.builder import Element, text
from policies.provenance import Origin, Provenance
from policies.record import RequestRecord

_AI_FIELDS = (("duration", "Duration"), ("ticket", "Ticket"), ("target", "Person receiving access"))


def provenance_lines(p: Provenance, entitlement: str) -> list[str]:
    lines: list[str] = []
    differs = bool(p.asked) and p.asked != entitlement
    asked = f"the message asked for {p.asked_name or p.asked}." if differs else ""
    if p.entitlement is Origin.AI:
        lines.append("Role suggested by AI; " + (asked or "the message named no role."))
    elif differs and p.entitlement is Origin.FORM:
        lines.append("Role chosen by hand on the form; " + asked)
    elif differs:
        lines.append("Role differs from the message; " + asked)
    lines += [f"{label} suggested by AI." for field, label in _AI_FIELDS if getattr(p, field) is Origin.AI]
    if p.justification is Origin.AI:  # never produced by triage; said plainly should it ever happen
        lines.append("Justification written by AI.")
    return lines


def provenance_section(record: RequestRecord) -> list[Element]:
    if record.triage is None:
        return []
    lines = provenance_lines(record.triage, record.request.entitlement)
    if not lines:
        return []
    return [text("Where this request came from:", bold=True, separator=True),
            *lay.bullets(lines, color="warning")]
