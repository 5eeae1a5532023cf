"""rq-scheduler keeps whole-second scores; AlignedScheduler ticks just after each whole second so a job due at
second S is enqueued at S + TICK_LAG_S, not up to a second later as with stock rq-scheduler's free-running loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.state.queue import TICK_LAG_S, seconds_to_next_tick


@pytest.mark.parametrize(("now", "expected"), [
    (100.0, TICK_LAG_S),                  # just before the tick of second 100
    (100.0 + TICK_LAG_S, 1.0),            # on the tick: the next one is a full second away
    (100.5, 0.5 + TICK_LAG_S),
    (100.999, 0.001 + TICK_LAG_S),
])
def test_ticks_fall_just_after_whole_seconds(now: float, expected: float) -> None:
    assert seconds_to_next_tick(now, 1) == pytest.approx(expected)


@given(st.floats(min_value=1e9, max_value=3e9), st.sampled_from([1, 2, 5]))
def test_the_next_tick_is_on_the_grid_and_never_more_than_one_interval_away(now: float, interval: int) -> None:
    wait = seconds_to_next_tick(now, interval)
    assert 0 < wait <= interval + 1e-6
    tick = now + wait - TICK_LAG_S
    assert abs(tick - round(tick / interval) * interval) < 1e-5
