"""The request lifecycle as a transition table: (state, event) -> state.

Every state change in the store goes through `next_state`, so an illegal move (approving a denied request,
revoking twice, activating an expired one) is a typed error rather than a silent overwrite.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    NEW = "new"  # only before the first decision is recorded
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    APPROVAL_EXPIRED = "approval_expired"
    ACTIVATING = "activating"
    ACTIVE = "active"
    REVOKING = "revoking"
    EXPIRED = "expired"
    REVOKED = "revoked"
    FAILED = "failed"
    APPLIED = "applied"  # an extension request whose time was added to the grant it extends

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_access(self) -> bool:
        """States in which an Entra assignment may exist and must eventually be removed."""
        return self in {State.ACTIVATING, State.ACTIVE, State.REVOKING}

    @property
    def working(self) -> bool:
        """States a request only passes through while a job carries it to the next one (approved awaiting its
        grant or extension, granting, revoking). Each has a deadline; the reconciler re-drives what misses it."""
        return self in WORKING


WORKING = frozenset({State.APPROVED, State.ACTIVATING, State.REVOKING})


class Event(StrEnum):
    AUTO_APPROVED = "auto_approved"
    SENT_FOR_APPROVAL = "sent_for_approval"
    POLICY_DENIED = "policy_denied"
    APPROVAL_RECORDED = "approval_recorded"  # one vote under a quorum > 1
    APPROVED = "approved"
    DENIED = "denied"
    ESCALATED = "escalated"
    APPROVAL_TIMED_OUT = "approval_timed_out"
    CANCELLED = "cancelled"
    ACTIVATION_STARTED = "activation_started"
    ACTIVATED = "activated"
    ACTIVATION_FAILED = "activation_failed"
    EXTENDED = "extended"
    REVOCATION_STARTED = "revocation_started"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REVOCATION_FAILED = "revocation_failed"
    APPLIED = "applied"


TERMINAL = frozenset({State.DENIED, State.CANCELLED, State.APPROVAL_EXPIRED, State.EXPIRED, State.REVOKED,
                      State.FAILED, State.APPLIED})

S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.NEW, E.AUTO_APPROVED): S.APPROVED,
    (S.NEW, E.SENT_FOR_APPROVAL): S.PENDING_APPROVAL,
    (S.NEW, E.POLICY_DENIED): S.DENIED,
    (S.PENDING_APPROVAL, E.APPROVAL_RECORDED): S.PENDING_APPROVAL,
    (S.PENDING_APPROVAL, E.APPROVED): S.APPROVED,
    (S.PENDING_APPROVAL, E.DENIED): S.DENIED,
    (S.PENDING_APPROVAL, E.ESCALATED): S.PENDING_APPROVAL,
    (S.PENDING_APPROVAL, E.APPROVAL_TIMED_OUT): S.APPROVAL_EXPIRED,
    (S.PENDING_APPROVAL, E.CANCELLED): S.CANCELLED,
    (S.APPROVED, E.CANCELLED): S.CANCELLED,
    (S.APPROVED, E.ACTIVATION_STARTED): S.ACTIVATING,
    (S.APPROVED, E.ACTIVATION_FAILED): S.FAILED,
    (S.APPROVED, E.APPLIED): S.APPLIED,
    # A retried activation (worker killed mid-job) re-enters ACTIVATING and adopts what Graph already holds.
    (S.ACTIVATING, E.ACTIVATION_STARTED): S.ACTIVATING,
    (S.ACTIVATING, E.ACTIVATED): S.ACTIVE,
    (S.ACTIVATING, E.ACTIVATION_FAILED): S.FAILED,
    (S.ACTIVE, E.EXTENDED): S.ACTIVE,
    (S.ACTIVE, E.REVOCATION_STARTED): S.REVOKING,
    # Expiry, deactivation and the reconciler may race to start a revocation; the second start is harmless.
    (S.REVOKING, E.REVOCATION_STARTED): S.REVOKING,
    (S.REVOKING, E.REVOCATION_FAILED): S.REVOKING,
    (S.REVOKING, E.EXPIRED): S.EXPIRED,
    (S.REVOKING, E.REVOKED): S.REVOKED,
}


class LifecycleError(Exception):
    """Base for lifecycle errors."""


class InvalidTransitionError(LifecycleError):
    def __init__(self, state: State, event: Event):
        self.state = state
        self.event = event
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        super().__init__(f"cannot apply {event.value!r} to a request in state {state.value!r}"
                         f" (allowed: {', '.join(allowed) or 'none, the request is final'})")


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransitionError(state, event) from None


def allowed_events(state: State) -> list[Event]:
    return [e for (s, e) in TRANSITIONS if s is state]
