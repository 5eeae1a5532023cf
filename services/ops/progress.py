"""A minimal progress line on stderr for long CLI operations (only when stderr is a terminal or forced)."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class Progress:
    def __init__(self, label: str, total: int | None, *, enabled: bool = True, every_s: float = 0.5):
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()
        self.every_s = every_s
        self._last = 0.0

    def __enter__(self) -> Progress:
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s:
            self._last = now
            self._render()

    def _render(self) -> None:
        if self.total:
            pct = 100 * self.done / self.total
            sys.stderr.write(f"\r{self.label}: {self.done}/{self.total} ({pct:.0f}%)")
        else:
            sys.stderr.write(f"\r{self.label}: {self.done}")
        sys.stderr.flush()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.enabled:
            self._render()
            sys.stderr.write("\n")

