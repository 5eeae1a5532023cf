"""An injectable, offsettable UTC clock.

Emulators read business time (PIM schedule windows, ticket timestamps) only through a ``Clock`` so a test can
move time forward instead of sleeping: advancing the offset makes Graph schedule instances expire by
themselves. Token lifetimes deliberately do *not* use this clock (see ``tokens.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

NowFn = Callable[[], datetime]


def real_utc_now() -> datetime:
    return datetime.now(UTC)


class Clock:
    """``clock()`` returns an aware UTC datetime: ``base() + offset``."""

    def __init__(self, base: NowFn | None = None, offset_s: float = 0.0) -> None:
        self._base: NowFn = base or real_utc_now
        self._offset = timedelta(seconds=offset_s)
        self._lock = threading.Lock()

    @classmethod
    def wrap(cls, clock: Clock | NowFn | None) -> Clock:
        """Accept a Clock, any ``() -> datetime`` callable, or None (real time)."""
        if isinstance(clock, Clock):
            return clock
        return cls(base=clock)

    def __call__(self) -> datetime:
        return self.now()

    def now(self) -> datetime:
        value = self._base()
        if value.tzinfo is None:
            # A naive base would silently compare wrong against parsed "Z" timestamps.
            raise ValueError("clock base must return an aware datetime")
        with self._lock:
            return value.astimezone(UTC) + self._offset

    @property
    def offset_s(self) -> float:
        with self._lock:
            return self._offset.total_seconds()

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def to_json(self) -> dict[str, object]:
        return {"now": self.now().isoformat().replace("+00:00", "Z"), "offset_s": self.offset_s}
