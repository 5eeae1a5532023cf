"""A token bucket whose time source is injectable, so throttling tests advance a clock instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float | None = None, now: Callable[[], float] = time.monotonic):
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_s
        self.capacity = burst if burst is not None else max(1.0, rate_per_s)
        self._now = now
        self._tokens = self.capacity
        self._stamp = now()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """Consume one token; None when allowed, else the seconds until a token will be available."""
        with self._lock:
            current = self._now()
            self._tokens = min(self.capacity, self._tokens + (current - self._stamp) * self.rate)
            self._stamp = current
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self.rate


def format_retry_after(seconds: float) -> str:
    """Fractional seconds as Graph sends them (``2.128``), never ``0``: a zero would invite a hot retry loop."""
    value = max(seconds, 0.001)
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0.001"
