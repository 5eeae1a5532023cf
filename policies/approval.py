"""Who may decide a pending request right now, and what one vote does to it.

Card data is never trusted: a click names a request id and a verb, and this module re-derives everything
else from the stored record and the policy as it is at the moment of the click.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from policies.bundles import merge_approvers
from policies.document import PolicyDocument
from policies.engine import resolve_approvers
from policies.lifecycle import Event, State
from policies.model import Actor, Approval, Approver, Outcome, Verdict
from policies.record import RequestRecord


class Refusal(StrEnum):
    NOT_PENDING = "not_pending"
    SELF_APPROVAL = "self_approval"
    TARGET_APPROVAL = "target_approval"
    NOT_APPROVER = "not_approver"
    NOT_ESCALATED = "not_escalated"
    ALREADY_VOTED = "already_voted"
    WINDOW_CLOSED = "window_closed"
    TERMS_CHANGED = "terms_changed"
    CARD_ALTERED = "card_altered"
    REASON_REQUIRED = "reason_required"


class ApprovalRefusedError(Exception):
    def __init__(self, code: Refusal, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code.value}: {message}")


def current_approvers(record: RequestRecord, policy: PolicyDocument, now: datetime) -> list[Approver]:
    if record.decision.is_bundle:
        return _bundle_approvers(record, policy, now)
    return _approvers_of(record, record.request.entitlement, record.decision.lane, policy, now) or []


def _approvers_of(record: RequestRecord, entitlement_id: str, lane_id: str | None, policy: PolicyDocument,
                  now: datetime) -> list[Approver] | None:
    """None when the policy no longer has the entitlement or the lane the request was decided on."""
    entitlement = policy.entitlement(entitlement_id)
    if entitlement is None:
        return None
    lane = None
    if lane_id:
        lane = next((la for la in entitlement.lanes if la.id == lane_id), None)
        if lane is None:
            return None
    return resolve_approvers(policy, entitlement, lane, now,
                             exclude={record.request.requester, record.request.target})


def _bundle_approvers(record: RequestRecord, policy: PolicyDocument, now: datetime) -> list[Approver]:
    """The union of the current approvers of every member that needed approval, each member re-read from the
    policy now. A member the policy no longer defines leaves nobody to approve the bundle (fail closed)."""
    groups = []
    for member in record.decision.members:
        approvers = _approvers_of(record, member.entitlement, member.lane, policy, now)
        if approvers is None:
            return []
        if member.outcome is Outcome.NEEDS_APPROVAL:
            groups.append(approvers)
    return list(merge_approvers(groups))


def authorise_vote(record: RequestRecord, clicker_id: str, verdict: Verdict, now: datetime,
                   policy: PolicyDocument, terms: str | None = None, reason: str = "",
                   altered: tuple[str, ...] = ()) -> Approver:
    """Return the clicker as an Approver, or raise ApprovalRefusedError saying exactly why not. `altered` names
    card-data fields the card never carried: such a click is refused rather than read selectively."""
    clicker = clicker_id.lower()
    if record.state is not State.PENDING_APPROVAL:
        raise ApprovalRefusedError(Refusal.NOT_PENDING, f"This request is already {record.state.value}.")
    if clicker == record.request.requester:
        raise ApprovalRefusedError(Refusal.SELF_APPROVAL, "You cannot approve or deny your own request.")
    if clicker == record.request.target:
        raise ApprovalRefusedError(Refusal.TARGET_APPROVAL, "You cannot decide a request that elevates you.")
    if terms is not None and terms != record.terms_digest:
        raise ApprovalRefusedError(Refusal.TERMS_CHANGED,
                                   "The request changed since this card was sent; use the latest card.")
    if altered:
        raise ApprovalRefusedError(Refusal.CARD_ALTERED,
                                   "This card's data was altered; use the card breakglass sent.")
    deadline = record.approval_deadline
    if deadline is not None and now >= deadline:
        raise ApprovalRefusedError(Refusal.WINDOW_CLOSED, "The approval window for this request has closed.")
    approver = next((a for a in current_approvers(record, policy, now) if a.object_id == clicker), None)
    if approver is None:
        raise ApprovalRefusedError(Refusal.NOT_APPROVER, "You are not an approver for this request under the "
                                                         "current policy.")
    if approver.after_escalation and (record.escalated_at is None or now < record.escalated_at):
        raise ApprovalRefusedError(Refusal.NOT_ESCALATED, "You are a backup approver for this request: you can "
                                                          "decide it once it escalates to the backups.")
    previous = record.voted(clicker)
    if previous is not None:
        raise ApprovalRefusedError(Refusal.ALREADY_VOTED,
                                   f"You already voted {previous.verdict.value} at {previous.at:%H:%M} UTC.")
    if verdict is Verdict.DENY and not reason.strip():
        raise ApprovalRefusedError(Refusal.REASON_REQUIRED, "A reason is required to deny a request.")
    return approver


def apply_vote(record: RequestRecord, approver: Approver, verdict: Verdict, now: datetime,
               reason: str = "") -> tuple[RequestRecord, Event]:
    """Record one vote. One deny ends the request; approvals count once per person up to the quorum."""
    vote = Approval(request_id=record.id, approver=approver.object_id, approver_name=approver.name,
                    verdict=verdict, reason=reason.strip(), at=now, request_version=record.version)
    actor = Actor(object_id=approver.object_id, name=approver.name)
    approvals = (*record.approvals, vote)
    if verdict is Verdict.DENY:
        event = Event.DENIED
    else:
        distinct = {a.approver for a in approvals if a.verdict is Verdict.APPROVE}
        event = Event.APPROVED if len(distinct) >= max(1, record.decision.quorum) else Event.APPROVAL_RECORDED
    return record.apply(event, actor, now, reason=reason.strip(), approvals=approvals), event
