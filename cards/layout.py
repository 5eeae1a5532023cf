"""Layout and wording shared by the cards: header with state badge, times in UTC, people, decision wording.

Strings returned here are raw; the builder escapes them when they are placed in a card.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cards.builder import Color, ColumnSet, Element, columns, text
from policies.durations import format_duration
from policies.lifecycle import State
from policies.model import Decision, Grant, GrantMode, Outcome, Transition, Verdict
from policies.record import RequestRecord

STATE_LABELS: dict[State, str] = {
    State.NEW: "new",
    State.PENDING_APPROVAL: "pending",
    State.APPROVED: "approved",
    State.DENIED: "denied",
    State.CANCELLED: "cancelled",
    State.APPROVAL_EXPIRED: "approval expired",
    State.ACTIVATING: "activating",
    State.ACTIVE: "active",
    State.REVOKING: "revoking",
    State.EXPIRED: "expired",
    State.REVOKED: "revoked",
    State.FAILED: "failed",
    State.APPLIED: "extension applied",
}

STATE_COLORS: dict[State, Color] = {
    State.NEW: "default",
    State.PENDING_APPROVAL: "warning",
    State.APPROVED: "accent",
    State.DENIED: "attention",
    State.CANCELLED: "default",
    State.APPROVAL_EXPIRED: "default",
    State.ACTIVATING: "accent",
    State.ACTIVE: "good",
    State.REVOKING: "warning",
    State.EXPIRED: "default",
    State.REVOKED: "default",
    State.FAILED: "attention",
    State.APPLIED: "good",
}

FLAG_WORDS: dict[str, str] = {
    "unusual_timing": "Unusual timing",
    "change_freeze": "Change freeze in effect",
    "for_someone_else": "Requested for someone else",
    "over_privileged": "More privilege than the task needs",
    "identity_risk": "Identity risk",
}

GRANT_MODE_WORDS: dict[GrantMode, str] = {
    GrantMode.PIM: "PIM assignment schedule (time-bound, Entra removes it at the end)",
    GrantMode.DIRECT: "Direct role assignment (removed by breakglass at the end)",
}
GROUP_MODE_WORDS: dict[GrantMode, str] = {
    GrantMode.PIM: "PIM for Groups assignment (time-bound, Entra removes it at the end)",
    GrantMode.DIRECT: "Direct group {access}ship (removed by breakglass at the end)",
}


def grant_mode_words(grant: Grant) -> str:
    """How the access was given, in words: a role's PIM schedule or direct assignment, a group's PIM for Groups
    assignment or direct membership/ownership."""
    target = grant.assignable
    if target.is_group:
        return GROUP_MODE_WORDS[grant.mode].format(access=target.scope)
    return GRANT_MODE_WORDS[grant.mode]


# --- header ---------------------------------------------------------------------------------------------------

def header(title: str, *, kicker: str | None = None, badge: str | None = None,
           badge_color: Color = "default") -> ColumnSet:
    """Kicker line (small, subtle), title (bold) and a coloured badge on the right."""
    left: list[Element] = []
    if kicker:
        left.append(text(kicker, line=True, limit=120, size="small", subtle=True))
    left.append(text(title, line=True, limit=160, size="medium", bold=True, heading=True,
                     spacing="none" if kicker else None))
    if badge is None:
        return columns((left, "stretch"))
    badge_block = text(badge.upper(), line=True, limit=40, bold=True, color=badge_color)
    return columns((left, "stretch"), ([badge_block], "auto"))


def state_label(state: State) -> str:
    return STATE_LABELS.get(state, state.value.replace("_", " "))


def state_color(state: State) -> Color:
    return STATE_COLORS.get(state, "default")


def state_header(record: RequestRecord, *, kicker: str = "Privileged access request") -> ColumnSet:
    return header(role_name(record), kicker=f"{kicker} {record.id}", badge=state_label(record.state),
                  badge_color=state_color(record.state))


def bullets(lines: Sequence[str], *, color: Color | None = None, limit: int = 500) -> list[Element]:
    return [text(f"• {line}", limit=limit, color=color, spacing="small") for line in lines]


# --- times (always UTC: a shared card has no reliable per-viewer time zone) -----------------------------------

def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def stamp(value: datetime) -> str:
    return f"{utc(value):%Y-%m-%d %H:%M} UTC"


def clock(value: datetime, now: datetime) -> str:
    """"14:30 UTC" on the same UTC day as `now`, otherwise with the date."""
    if utc(value).date() == utc(now).date():
        return f"{utc(value):%H:%M} UTC"
    return stamp(value)


def iso(value: datetime) -> str:
    return f"{utc(value):%Y-%m-%dT%H:%M:%SZ}"


def minutes_words(minutes: int) -> str:
    return format_duration(timedelta(minutes=minutes))


def relative(value: datetime, now: datetime) -> str:
    seconds = (value - now).total_seconds()
    minutes = round(abs(seconds) / 60)
    if minutes == 0:
        return "now"
    words = format_duration(timedelta(minutes=minutes))
    return f"in {words}" if seconds > 0 else f"{words} ago"


# --- people and roles -----------------------------------------------------------------------------------------

def role_name(record: RequestRecord) -> str:
    if record.decision.is_bundle:  # every member named: one card (approval, receipt) covers them all
        return record.access_name
    name = record.decision.entitlement_name or record.request.entitlement
    lane = record.decision.lane or record.request.lane
    return f"{name} ({lane} lane)" if lane else name


def requester_name(record: RequestRecord) -> str:
    return record.requester_name or record.request.requester


def target_name(record: RequestRecord) -> str:
    name = record.target_name or record.request.target
    if record.target_upn and record.target_upn != name:
        return f"{name} ({record.target_upn})"
    return name


def actor_name(record: RequestRecord, actor: str) -> str:
    if actor == record.request.requester:
        return requester_name(record)
    if actor == record.request.target:
        return record.target_name or actor
    for vote in record.approvals:
        if vote.approver == actor and vote.approver_name:
            return vote.approver_name
    if actor.startswith("system:"):
        return f"breakglass ({actor.removeprefix('system:')})"
    return actor


def flag_words(flags: Sequence[str]) -> list[str]:
    return [FLAG_WORDS.get(f, f.replace("_", " ").capitalize()) for f in flags]


# --- decision and votes ---------------------------------------------------------------------------------------

def rule_approval_reason(decision: Decision) -> str:
    """Why the policy approved without a human (the passed `approval.required` rule), in words."""
    for result in decision.rules:
        if result.rule == "approval.required" and result.passed:
            return result.reason.removeprefix("Approved by rule: ")
    return "no approval required"


def approved_by_rule(record: RequestRecord) -> bool:
    return record.decision.outcome is Outcome.AUTO_APPROVE and not record.approvals


def approve_count(record: RequestRecord) -> int:
    return len({a.approver for a in record.approvals if a.verdict is Verdict.APPROVE})


def decision_summary(record: RequestRecord) -> str:
    decision = record.decision
    if decision.outcome is Outcome.DENY:
        return "Denied by policy."
    if decision.outcome is Outcome.AUTO_APPROVE:
        return f"Approved by rule: {rule_approval_reason(decision)}"
    if record.state in (State.NEW, State.PENDING_APPROVAL):
        return decision.summary()
    if record.votes(Verdict.DENY):
        return "Denied by an approver."
    approvers = list(dict.fromkeys(v.approver_name or v.approver for v in record.votes(Verdict.APPROVE)))
    needed = max(1, decision.quorum)
    if len(approvers) >= needed:
        return f"Approved by {', '.join(approvers)}."
    return f"Needed {needed} approval(s), got {len(approvers)}."


def vote_lines(record: RequestRecord, now: datetime) -> list[str]:
    lines = []
    for vote in record.approvals:
        who = vote.approver_name or vote.approver
        if vote.verdict is Verdict.APPROVE:
            lines.append(f"Approved by {who} at {clock(vote.at, now)}" + (f": {vote.reason}" if vote.reason else ""))
        else:
            lines.append(f"Denied by {who} at {clock(vote.at, now)}: {vote.reason or 'no reason given'}")
    return lines


def approved_by(record: RequestRecord, now: datetime) -> str:
    """Names and times of the approvers, or the rule that approved it."""
    votes = [v for v in record.approvals if v.verdict is Verdict.APPROVE]
    if votes:
        return ", ".join(f"{v.approver_name or v.approver} at {clock(v.at, now)}" for v in votes)
    if record.decision.outcome is Outcome.AUTO_APPROVE:
        return f"approved by rule: {rule_approval_reason(record.decision)}"
    return "not approved"


# --- history --------------------------------------------------------------------------------------------------

def entered(record: RequestRecord, state: State) -> Transition | None:
    """The last transition into `state`, if the history has one."""
    for transition in reversed(record.history):
        if transition.to_state == state.value:
            return transition
    return None


def ended_at(record: RequestRecord) -> datetime:
    transition = entered(record, record.state)
    return transition.at if transition else record.updated_at


def end_reason(record: RequestRecord) -> str:
    transition = entered(record, record.state)
    if record.end_reason:
        return record.end_reason
    if transition and transition.reason:
        return transition.reason
    if record.state is State.EXPIRED:
        return "the granted time ran out"
    if record.state is State.REVOKED:
        who = actor_name(record, transition.actor) if transition else "someone"
        return f"deactivated by {who}"
    return record.state.value
