"""Small builders for RequestRecord test objects in every lifecycle state.

Records are driven through `RequestRecord.apply` along a legal path, so every state has the approvals, grant
and history the real lifecycle would give it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cards.intake import EntitlementChoice
from policies.lifecycle import Event, State
from policies.model import (
    Actor,
    Approval,
    Approver,
    Decision,
    Effect,
    Grant,
    GrantRequest,
    Outcome,
    RuleResult,
    TicketFacts,
    Verdict,
)
from policies.record import RequestRecord

NOW = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
CREATED = NOW - timedelta(minutes=30)
REQUESTER = "aaaaaaaa-0000-0000-0000-000000000001"
TARGET = "aaaaaaaa-0000-0000-0000-000000000002"
APPROVER = "cccccccc-0000-0000-0000-000000000002"
APPROVER_NAME = "Dana Whitfield"
ROLE_ID = "62e90394-69f5-4237-9190-012177145e10"
MRI = "29:1FakeApproverMri"

INTAKE_CHOICES = [
    EntitlementChoice("global-admin", "Global Administrator", timedelta(hours=4), True),
    EntitlementChoice("helpdesk-admin", "Helpdesk Administrator", timedelta(hours=8), False),
]


def make_request(**overrides: Any) -> GrantRequest:
    fields: dict[str, Any] = {
        "id": "req-0001",
        "requester": REQUESTER,
        "target": REQUESTER,
        "entitlement": "global-admin",
        "duration": timedelta(hours=2),
        "justification": "Restore the Exchange connector after INC0012345 broke mail flow.",
        "ticket": "INC0012345",
        "created_at": CREATED,
    }
    fields.update(overrides)
    return GrantRequest(**fields)


def rule(name: str, passed: bool, effect: Effect, reason: str) -> RuleResult:
    return RuleResult(rule=name, passed=passed, effect=effect, reason=reason)


def make_decision(outcome: Outcome = Outcome.NEEDS_APPROVAL, **overrides: Any) -> Decision:
    rules = [rule("requester.eligible", True, Effect.DENY, 'Requester is in "IT Administrators".')]
    if outcome is Outcome.NEEDS_APPROVAL:
        rules.append(rule("approval.required", False, Effect.APPROVAL,
                          "Global Administrator always requires approval."))
        rules.append(rule("timing.business_hours", False, Effect.APPROVAL,
                          "Unusual timing: Sun 23:10 Europe/Berlin is outside business hours."))
    elif outcome is Outcome.AUTO_APPROVE:
        rules.append(rule("approval.required", True, Effect.APPROVAL,
                          "Approved by rule: incident is P1 and Sam Okafor is on call (Identity On-Call primary)."))
    else:
        rules.append(rule("duration.max", False, Effect.DENY,
                          "Duration 8 hours exceeds the 4 hours maximum for Global Administrator."))
    fields: dict[str, Any] = {
        "outcome": outcome,
        "entitlement": "global-admin",
        "entitlement_name": "Global Administrator",
        "role_definition_id": ROLE_ID,
        "rules": tuple(rules),
        "max_duration": timedelta(hours=4),
        "granted_duration": None if outcome is Outcome.DENY else timedelta(hours=2),
        "evaluated_at": CREATED,
        "policy_digest": "abc123",
    }
    if outcome is Outcome.NEEDS_APPROVAL:
        fields.update(
            approvers=(Approver(object_id=APPROVER, name=APPROVER_NAME, source="identity-leads:on-call",
                                notify_first=True),),
            quorum=1, escalate_after=timedelta(minutes=10), expire_after=timedelta(minutes=60),
            flags=("unusual_timing",),
        )
    fields.update(overrides)
    return Decision(**fields)


def _vote(record: RequestRecord, verdict: Verdict, at: datetime, reason: str = "") -> tuple[Approval, ...]:
    vote = Approval(request_id=record.id, approver=APPROVER, approver_name=APPROVER_NAME, verdict=verdict,
                    reason=reason, at=at, request_version=record.version)
    return (*record.approvals, vote)


def _grant(record: RequestRecord, start: datetime) -> Grant:
    return Grant(request_id=record.id, principal_id=record.request.target, role_definition_id=ROLE_ID,
                 starts_at=start, ends_at=start + record.request.duration, schedule_request_id="sched-1")


def make_record(state: State = State.PENDING_APPROVAL, *, request: GrantRequest | None = None,
                decision: Decision | None = None, **overrides: Any) -> RequestRecord:
    """A record in `state`, reached through legal transitions; `overrides` are applied last."""
    request = request or make_request(extends="req-0000" if state is State.APPLIED else None)
    decision = decision or make_decision()
    record = RequestRecord(id=request.id, request=request, decision=decision, requester_name="Alex Example",
                           target_name="Alex Example", target_upn="alex@contoso.example",
                           ticket_facts=TicketFacts(number="INC0012345", priority=2, state="In Progress",
                                                    short_description="Mail flow broken"),
                           created_at=CREATED, updated_at=CREATED)
    for event, actor, at, changes in _path(record, state, decision):
        record = record.apply(event, actor, at, **changes)
    assert record.state is state
    return record.model_copy(update=overrides) if overrides else record


Step = tuple[Event, Actor, datetime, dict[str, Any]]


def _path(record: RequestRecord, state: State, decision: Decision) -> list[Step]:
    requester = Actor(object_id=REQUESTER, name="Alex Example")
    approver = Actor(object_id=APPROVER, name=APPROVER_NAME)
    policy = Actor.system("policy")
    t = CREATED
    if state is State.NEW:
        return []
    if decision.outcome is Outcome.DENY:
        return [(Event.POLICY_DENIED, policy, t, {})]
    steps: list[Step]
    if decision.outcome is Outcome.AUTO_APPROVE:
        steps = [(Event.AUTO_APPROVED, policy, t, {})]
    else:
        steps = [(Event.SENT_FOR_APPROVAL, policy, t, {})]
        if state is State.PENDING_APPROVAL:
            return steps
        if state is State.CANCELLED:
            return [*steps, (Event.CANCELLED, requester, t + timedelta(minutes=5), {})]
        if state is State.APPROVAL_EXPIRED:
            return [*steps, (Event.APPROVAL_TIMED_OUT, Actor.system("expiry"), t + timedelta(minutes=60), {})]
        if state is State.DENIED:
            return [*steps, (Event.DENIED, approver, t + timedelta(minutes=4), {
                "approvals": _vote(record, Verdict.DENY, t + timedelta(minutes=4), "Use the Exchange role.")})]
        steps.append((Event.APPROVED, approver, t + timedelta(minutes=4),
                      {"approvals": _vote(record, Verdict.APPROVE, t + timedelta(minutes=4))}))
    if state is State.APPROVED:
        return steps
    if state is State.APPLIED:
        return [*steps, (Event.APPLIED, Actor.system("worker"), t + timedelta(minutes=5), {})]
    start = t + timedelta(minutes=5)
    steps.append((Event.ACTIVATION_STARTED, Actor.system("worker"), start, {}))
    if state is State.ACTIVATING:
        return steps
    if state is State.FAILED:
        return [*steps, (Event.ACTIVATION_FAILED, Actor.system("worker"), start,
                         {"failure": "Graph refused the assignment (403 Forbidden)."})]
    steps.append((Event.ACTIVATED, Actor.system("worker"), start, {"grant": _grant(record, start)}))
    if state is State.ACTIVE:
        return steps
    if state is State.EXPIRED:
        end, expiry = start + record.request.duration, Actor.system("expiry")
        return [*steps, (Event.REVOCATION_STARTED, expiry, end, {}), (Event.EXPIRED, expiry, end, {})]
    steps.append((Event.REVOCATION_STARTED, requester, start + timedelta(minutes=50), {}))
    if state is State.REVOKING:
        return steps
    return [*steps, (Event.REVOKED, requester, start + timedelta(minutes=51), {"end_reason": "work finished"})]


def all_states() -> list[State]:
    return list(State)
