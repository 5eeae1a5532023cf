"""Injectable time. Production uses SystemClock; tests use FixedClock so nothing sleeps to wait for time.

Every clock can convert one of its times to the real (wall) time at which it will occur, because rq-scheduler
fires on the real clock: a revoke due at product time T is scheduled at `to_real(T)`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def to_real(self, when: datetime) -> datetime: ...

    def from_real(self, real: datetime) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def to_real(self, when: datetime) -> datetime:
        return when

    def from_real(self, real: datetime) -> datetime:
        return real


class FixedClock:
    """A clock that only moves when told to; thread-safe so worker threads in tests see the same time."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)

    def to_real(self, when: datetime) -> datetime:
        return datetime.now(UTC) + (when - self.now())

    def from_real(self, real: datetime) -> datetime:
        return self.now() + (real - datetime.now(UTC))


class OffsetClock:
    """Real time shifted by an offset and optionally running faster (development and demos only): product
    time = anchor + offset + (real - anchor) * scale, where `anchor` is a real instant all processes share.
    Tests may also jump it forward with `advance()`; jumps are not part of the real-time conversion, so a job
    scheduled before a jump becomes due "early" exactly as if that much time had passed."""

    def __init__(self, offset: timedelta, *, scale: float = 1.0, anchor: datetime | None = None):
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.offset = offset
        self.scale = scale
        self.anchor = anchor or datetime.now(UTC)
        self.jumped = timedelta(0)

    def now(self) -> datetime:
        real = datetime.now(UTC)
        return self.anchor + self.offset + (real - self.anchor) * self.scale + self.jumped

    def to_real(self, when: datetime) -> datetime:
        return self.anchor + (when - self.anchor - self.offset) / self.scale

    def from_real(self, real: datetime) -> datetime:
        return self.anchor + self.offset + (real - self.anchor) * self.scale

    def advance(self, delta: timedelta) -> datetime:
        self.jumped += delta
        return self.now()
