"""The stored aggregate for one request: its terms, decision, votes, grant and full transition history."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from policies.closing import AffectedAccount, StepStatus
from policies.lifecycle import Event, State, next_state
from policies.model import (
    Actor,
    Approval,
    AwareDatetime,
    CardRef,
    Decision,
    Frozen,
    Grant,
    GrantRequest,
    TicketFacts,
    Transition,
    Verdict,
)
from policies.provenance import Provenance


class RequestRecord(Frozen):
    id: str
    version: int = 0
    state: State = State.NEW
    request: GrantRequest
    decision: Decision
    requester_name: str = ""
    target_name: str = ""
    target_upn: str = ""
    ticket_facts: TicketFacts | None = None
    approvals: tuple[Approval, ...] = ()
    grant: Grant | None = None
    # A bundle's assignments, one per member in the bundle's order; `grant` is the first (its generation names the
    # revoke job, its end is the bundle's end). Empty for a request of one entitlement.
    grants: tuple[Grant, ...] = ()
    history: tuple[Transition, ...] = ()
    cards: tuple[CardRef, ...] = ()
    escalated_at: AwareDatetime | None = None
    failure: str | None = None
    end_reason: str | None = None
    notes: tuple[str, ...] = ()
    triage: Provenance | None = None  # where each field came from (Teams intake only)
    affected: AffectedAccount | None = None  # the account a security incident is about (runbook subject)
    steps: tuple[StepStatus, ...] = ()  # follow-up steps around the grant's end (services.workflow.followup)
    created_at: AwareDatetime
    updated_at: AwareDatetime

    def apply(self, event: Event, actor: Actor, at: datetime, reason: str = "", **changes: Any) -> RequestRecord:
        """Return the record after `event`; raises InvalidTransitionError when the table forbids it."""
        to_state = next_state(self.state, event)
        transition = Transition(seq=len(self.history) + 1, from_state=self.state.value, to_state=to_state.value,
                                event=event.value, actor=actor.object_id, at=at, reason=reason)
        return self.model_copy(update={
            **changes,
            "state": to_state,
            "version": self.version + 1,
            "history": (*self.history, transition),
            "updated_at": at,
        })

    def with_changes(self, at: datetime, **changes: Any) -> RequestRecord:
        """A change that is not a lifecycle event (a card copy recorded, a note); still bumps the version."""
        return self.model_copy(update={**changes, "version": self.version + 1, "updated_at": at})

    @property
    def terms_digest(self) -> str:
        """Binds votes to what was asked: entitlement, target, duration, ticket and justification."""
        r = self.request
        parts = [r.id, r.entitlement, r.target, str(int(r.duration.total_seconds())), r.ticket or "",
                 r.justification, r.lane or self.decision.lane or ""]
        if self.affected is not None:  # a vote also approves the runbook steps acting on this account
            parts.append(self.affected.object_id)
        blob = "\x1f".join(parts)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def access_name(self) -> str:
        """What was asked for, in words: the entitlement, or the bundle with every member ("Incident responder
        (Security Administrator, User Administrator)")."""
        d = self.decision
        name = d.entitlement_name or d.entitlement
        if not d.members:
            return name
        return f"{name} (" + ", ".join(m.entitlement_name or m.entitlement for m in d.members) + ")"

    @property
    def access_label(self) -> str:
        """The label before `access_name` on cards and alerts: "Role", "Group membership", "Group ownership" or
        "Bundle"."""
        return "Bundle" if self.decision.members else self.decision.kind_label

    @property
    def member_grants(self) -> tuple[Grant, ...]:
        """Every assignment this request holds: a bundle's members, or its one grant."""
        if self.grants:
            return self.grants
        return (self.grant,) if self.grant is not None else ()

    def step(self, key: str) -> StepStatus | None:
        return next((s for s in self.steps if s.key == key), None)

    def with_step(self, step: StepStatus, at: datetime) -> RequestRecord:
        """The record with `step` added or replacing the step of the same key."""
        if self.step(step.key) is None:
            return self.with_changes(at, steps=(*self.steps, step))
        return self.with_changes(at, steps=tuple(step if s.key == step.key else s for s in self.steps))

    def votes(self, verdict: Verdict) -> list[Approval]:
        return [a for a in self.approvals if a.verdict is verdict]

    def voted(self, object_id: str) -> Approval | None:
        for a in self.approvals:
            if a.approver == object_id:
                return a
        return None

    @property
    def approval_deadline(self) -> datetime | None:
        if self.decision.expire_after is None:
            return None
        return self.created_at + self.decision.expire_after

    @property
    def escalation_due(self) -> datetime | None:
        if self.decision.escalate_after is None:
            return None
        return self.created_at + self.decision.escalate_after
