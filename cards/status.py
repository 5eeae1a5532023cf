"""One card for a request in any state, rendered for one kind of viewer.

The same function draws the requester's 1:1 card, the approver's card and the read-only copy in a channel.
For a pending request the card carries `refresh` for the approvers' MRIs: Teams fetches the approver view
(`viewer="approver"`, with Approve/Deny) for those users only, and everyone else sees the read-only base card.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from cards import layout as lay
from cards.builder import (
    Action,
    Element,
    Fact,
    Refresh,
    choice_input,
    execute,
    fact,
    fact_set,
    refresh,
    render,
    show_card,
    text,
    text_input,
)
from cards.provenance import provenance_section
from cards.verbs import INPUT_COMMENT, INPUT_MINUTES, INPUT_REASON, Verb, request_data
from policies.durations import format_duration
from policies.lifecycle import State
from policies.model import Outcome
from policies.record import RequestRecord

Viewer = Literal["requester", "approver", "readonly"]

EXTEND_MINUTES = (15, 30, 60)
JUSTIFICATION_LIMIT = 1000
DENY_REASON_MAX = 500
COMMENT_MAX = 500


def request_card(record: RequestRecord, *, now: datetime, viewer: Viewer = "readonly",
                 approver_ids: list[str] | None = None) -> dict[str, Any]:
    body: list[Element] = [
        lay.state_header(record),
        *_status(record, now),
        fact_set(_facts(record, now)),
        *_reasons(record),
        *_advice(record),
        *provenance_section(record),
        *_votes(record, now),
        *_followups(record, now),
        *_approver_inputs(record, viewer),
    ]
    return render(body, _actions(record, viewer), refresh=_refresh(record, approver_ids),
                  fallback_text=f"Privileged access request {record.id}: {lay.state_label(record.state)}")


# --- body -----------------------------------------------------------------------------------------------------

def _status(record: RequestRecord, now: datetime) -> list[Element]:
    """One or two lines under the header saying where the request stands."""
    describe = _STATUS.get(record.state)
    if describe is not None:
        return describe(record, now)
    line = _SIMPLE_STATUS.get(record.state)
    return [text(line, subtle=True)] if line else []


_SIMPLE_STATUS: dict[State, str] = {
    State.NEW: "Checking the request against the policy.",
    State.APPROVED: "Approved. The role is being prepared.",
    State.ACTIVATING: "Activating the role in Entra ID.",
    State.REVOKING: "Removing the role in Entra ID.",
}


def _active(record: RequestRecord, now: datetime) -> list[Element]:
    if record.grant is None:
        return [text(f"Active for {format_duration(record.request.duration)}", bold=True, color="good")]
    ends = record.grant.ends_at
    lines = [text(f"Active until {lay.clock(ends, now)} ({lay.relative(ends, now)})", bold=True, color="good")]
    warned = record.step("warn")
    if warned is not None and warned.status == "done" and now < ends:
        # Every copy of the card is re-rendered after each change: the expiry warning stays on it.
        lines.append(text("Ending soon: extend it if you need more time, or deactivate it now if you are done.",
                          color="warning", spacing="small"))
    return lines


def _pending(record: RequestRecord, now: datetime) -> list[Element]:
    lines: list[Element] = []
    if record.decision.quorum > 1:
        lines.append(text(f"{lay.approve_count(record)} of {record.decision.quorum} approvals so far."))
    deadline = record.approval_deadline
    if deadline is not None:
        verb = "closes" if deadline > now else "closed"
        lines.append(text(f"The approval window {verb} at {lay.clock(deadline, now)} "
                          f"({lay.relative(deadline, now)}).", subtle=True, spacing="small"))
    return lines


def _ended(record: RequestRecord, now: datetime) -> list[Element]:
    end = lay.ended_at(record)
    start = record.grant.starts_at if record.grant else None
    span = f"Started {lay.stamp(start)}, ended {lay.stamp(end)}." if start else f"Ended {lay.stamp(end)}."
    return [text(span), text(f"End reason: {lay.end_reason(record)}", subtle=True, spacing="small")]


def _failed(record: RequestRecord, now: datetime) -> list[Element]:
    return [text(f"Failed: {record.failure or 'the role could not be granted'}", color="attention")]


def _cancelled(record: RequestRecord, now: datetime) -> list[Element]:
    t = lay.entered(record, State.CANCELLED)
    who = lay.actor_name(record, t.actor) if t else "the requester"
    line = f"Cancelled by {who} at {lay.clock(lay.ended_at(record), now)}"
    return [text(line + (f": {t.reason}" if t and t.reason else "."), subtle=True)]


def _approval_expired(record: RequestRecord, now: datetime) -> list[Element]:
    at = lay.clock(lay.ended_at(record), now)
    return [text(f"Nobody decided in time; the request expired at {at}.", subtle=True)]


def _applied(record: RequestRecord, now: datetime) -> list[Element]:
    extended = f"request {record.request.extends}" if record.request.extends else "the grant it extends"
    return [text(f"Extension applied: the time was added to {extended}.", subtle=True)]


_STATUS: dict[State, Callable[[RequestRecord, datetime], list[Element]]] = {
    State.ACTIVE: _active,
    State.PENDING_APPROVAL: _pending,
    State.EXPIRED: _ended,
    State.REVOKED: _ended,
    State.FAILED: _failed,
    State.CANCELLED: _cancelled,
    State.APPROVAL_EXPIRED: _approval_expired,
    State.APPLIED: _applied,
}


def _facts(record: RequestRecord, now: datetime) -> list[Fact]:
    r = record.request
    facts = [fact("Request id", record.id), fact("Requester", lay.requester_name(record))]
    if r.for_someone_else:
        facts.append(fact("For", lay.target_name(record)))
    facts.append(fact(record.decision.kind_label, lay.role_name(record)))
    facts.append(fact("Duration", format_duration(r.duration)))
    if r.extends:
        # The extension is asked by whoever clicked: the holder or the original requester; say which.
        role = "who holds the role" if r.requester == r.target else "who asked for the grant"
        facts.append(fact("Extends", f"{r.extends}, asked by {lay.requester_name(record)}, {role}"))
    facts.append(fact("Ticket", _ticket(record)))
    if record.affected is not None:
        a = record.affected
        facts.append(fact("Affected account", f"{a.name or a.upn} ({a.upn}), named on the {a.source}"))
    facts.append(fact("Justification", r.justification, limit=JUSTIFICATION_LIMIT))
    facts.append(fact("Requested", f"{lay.stamp(r.created_at)} ({lay.relative(r.created_at, now)})"))
    facts.append(fact("Decision", lay.decision_summary(record)))
    risk = [r.reason for r in record.decision.rules if r.rule.startswith("risk.")]
    if risk:
        facts.append(fact("Identity risk", " ".join(risk), limit=600))
    return facts


def _ticket(record: RequestRecord) -> str:
    number = record.request.ticket
    if not number:
        return "none"
    t = record.ticket_facts
    if t is None or not t.exists:
        return number
    details = [t.kind, t.state or ("open" if t.open else "closed")]
    if t.priority is not None:
        details.append(f"P{t.priority}")
    summary = f": {t.short_description}" if t.short_description else ""
    return f"{number} ({', '.join(d for d in details if d)}){summary}"


def _reasons(record: RequestRecord) -> list[Element]:
    reasons = record.decision.reasons
    if not reasons or record.state not in (State.PENDING_APPROVAL, State.DENIED):
        return []
    if record.decision.outcome is Outcome.DENY:
        heading = "Denied by policy because:"
    elif record.state is State.PENDING_APPROVAL:
        heading = "Needs approval because:"
    else:
        heading = "Needed approval because:"
    return [text(heading, bold=True, separator=True), *lay.bullets(reasons)]


def _advice(record: RequestRecord) -> list[Element]:
    out: list[Element] = [text(f"Least privilege: {hint}", color="warning") for hint in record.decision.hints]
    flags = lay.flag_words(record.decision.flags)
    if flags:
        out.append(text("⚠ " + " · ".join(flags), color="warning", spacing="small"))
    return out


def _votes(record: RequestRecord, now: datetime) -> list[Element]:
    lines = lay.vote_lines(record, now)
    if not lines and lay.approved_by_rule(record) and record.state not in (State.NEW, State.DENIED):
        lines = [f"Approved by rule: {lay.rule_approval_reason(record.decision)}"]
    if not lines:
        return []
    return [text("Decisions:", bold=True, separator=True), *lay.bullets(lines)]


_STEP_WORDS = {"done": "Done", "failed": "FAILED", "refused": "Refused by policy", "skipped": "Skipped",
               "queued": "Running", "scheduled": "Due"}


def _followups(record: RequestRecord, now: datetime) -> list[Element]:
    """The grant's follow-up steps (session revocation, runbook steps, activity collection) and where each stands;
    the activity passes as one line: the latest count, and whether more passes follow."""
    lines = []
    for step in record.steps:
        if step.kind in {"plan", "activity", "ended_notice"}:
            continue
        when = f" {lay.clock(step.due_at, now)}" if step.status == "scheduled" else ""
        detail = f": {step.detail}" if step.detail and step.status != "scheduled" else ""
        lines.append(f"{step.label}: {_STEP_WORDS[step.status]}{when}{detail}")
    passes = [s for s in record.steps if s.kind == "activity"]
    done = [s for s in passes if s.status == "done"]
    if done:
        more = any(s.pending for s in passes)
        lines.append(f"What was done while elevated: {done[-1].detail}" + ("; collecting again as Entra's logs arrive"
                                                                           if more else ""))
    elif passes:
        lines.append("What was done while elevated: being collected from Entra's logs")
    if not lines:
        return []
    return [text("Follow-up:", bold=True, separator=True), *lay.bullets(lines)]


# --- actions --------------------------------------------------------------------------------------------------

def _actions(record: RequestRecord, viewer: Viewer) -> list[Action]:
    if viewer == "approver" and record.state is State.PENDING_APPROVAL:
        return _approver_actions(record)
    if viewer == "requester" and record.state is State.PENDING_APPROVAL:
        return [execute("Cancel request", Verb.REQUEST_CANCEL, request_data(record.id))]
    if viewer == "requester" and record.state is State.ACTIVE:
        return _holder_actions(record)
    return []


def _approver_inputs(record: RequestRecord, viewer: Viewer) -> list[Element]:
    """An optional comment Approve sends along (an input in the body travels with the card's own actions, so
    approving stays one click)."""
    if viewer != "approver" or record.state is not State.PENDING_APPROVAL:
        return []
    return [text_input(INPUT_COMMENT, label="Comment (optional; the requester sees it, the audit log keeps it)",
                       multiline=True, max_length=COMMENT_MAX, placeholder="e.g. only the CA fix, nothing else")]


def _approver_actions(record: RequestRecord) -> list[Action]:
    data = request_data(record.id, terms=record.terms_digest)
    reason = text_input(INPUT_REASON, label="Reason for denying", multiline=True, required=True,
                        max_length=DENY_REASON_MAX, placeholder="Tell the requester why",
                        error_message="A reason is required to deny a request.")
    deny = execute("Deny request", Verb.REQUEST_DENY, data, style="destructive")
    return [
        execute("Approve", Verb.REQUEST_APPROVE, data, style="positive"),
        show_card("Deny", [reason], [deny]),
    ]


def _holder_actions(record: RequestRecord) -> list[Action]:
    data = request_data(record.id)
    minutes = choice_input(INPUT_MINUTES, [(lay.minutes_words(m), str(m)) for m in EXTEND_MINUTES],
                           label="Extend by", value=str(EXTEND_MINUTES[0]), required=True,
                           error_message="Choose how long to extend by.")
    return [
        execute("Deactivate now", Verb.GRANT_DEACTIVATE, data, style="destructive"),
        show_card("Extend", [minutes], [execute("Extend", Verb.GRANT_EXTEND, data)]),
    ]


def _refresh(record: RequestRecord, approver_ids: list[str] | None) -> Refresh | None:
    if approver_ids is None or record.state is not State.PENDING_APPROVAL:
        return None
    return refresh(execute("Refresh", Verb.REQUEST_REFRESH, request_data(record.id)), approver_ids)
