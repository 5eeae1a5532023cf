from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies.lifecycle import TRANSITIONS, Event, InvalidTransitionError, State, next_state
from policies.model import Actor
from tests.factories import facts, record_for, request, ticket

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_happy_path():
    s = State.NEW
    for event in [Event.SENT_FOR_APPROVAL, Event.APPROVED, Event.ACTIVATION_STARTED, Event.ACTIVATED,
                  Event.EXTENDED, Event.REVOCATION_STARTED, Event.EXPIRED]:
        s = next_state(s, event)
    assert s is State.EXPIRED


@pytest.mark.parametrize("state", [s for s in State if s.terminal])
def test_terminal_states_accept_nothing(state):
    for event in Event:
        with pytest.raises(InvalidTransitionError):
            next_state(state, event)


def test_illegal_transition_says_what_is_allowed():
    with pytest.raises(InvalidTransitionError) as err:
        next_state(State.DENIED, Event.APPROVED)
    assert "cannot apply 'approved' to a request in state 'denied'" in str(err.value)


def test_no_path_leaves_access_without_a_revocation():
    # Every state that may hold an Entra assignment can only be left through a revocation outcome or failure.
    for (state, event), to in TRANSITIONS.items():
        if state.holds_access and not to.holds_access:
            assert to in {State.EXPIRED, State.REVOKED, State.FAILED}, (state, event, to)


def test_record_apply_records_who_when_why(policy):
    rec = record_for(policy, request("sam", at=NOW), facts("sam", ticket_facts=ticket()), NOW)
    assert rec.state is State.APPROVED and rec.version == 1
    nxt = rec.apply(Event.ACTIVATION_STARTED, Actor(object_id="worker-1"), NOW, reason="grant job")
    assert nxt.version == 2 and nxt.state is State.ACTIVATING
    t = nxt.history[-1]
    assert (t.from_state, t.to_state, t.event, t.actor, t.reason) == ("approved", "activating",
                                                                      "activation_started", "worker-1", "grant job")
    with pytest.raises(InvalidTransitionError):
        nxt.apply(Event.APPROVED, Actor(object_id="x"), NOW)
