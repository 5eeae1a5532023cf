"""Fault injection rules: canned error responses, added latency, or a dropped connection.

A rule matches an optional method plus a path regex and applies to the next ``times`` matching requests, or
with a ``probability`` drawn from a seeded ``random.Random`` (so a flaky scenario replays identically), and
may expire after ``duration_s``; ``skip`` lets the first N matching requests through untouched (fail the second
of three similar calls). The first applicable rule wins.

With ``after=True`` the request is handled for real first and only its response is delayed (``latency_ms``) or
lost (``drop``): the upstream did the work but the caller does not hear about it in time, or at all.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .fixture_files import response_of


class FaultRuleError(ValueError):
    """A rule definition that can never do anything sensible."""


@dataclass
class FaultRule:
    path: str = ".*"  # regex, re.search against the decoded request path
    method: str | None = None
    status: int | None = None
    body: Any = None  # JSON value or str; None + status -> the emulator's own default body for that status
    headers: dict[str, str | None] = field(default_factory=dict)  # a None value removes a default header
    latency_ms: float = 0.0
    drop: bool = False  # close the socket with a TCP reset, no HTTP response
    after: bool = False  # apply latency/drop after the handler ran (the work is done, the response late or lost)
    times: int | None = None
    probability: float | None = None
    duration_s: float | None = None
    fixture: str | None = None  # a *.http.json whose response supplies status/headers/body defaults
    skip: int = 0  # matching requests to let through before the rule applies
    id: str = ""
    hits: int = 0
    created_monotonic: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.fixture:
            status, headers, body = response_of(self.fixture)
            self.status = self.status if self.status is not None else status
            self.headers = {**headers, **self.headers}
            self.body = self.body if self.body is not None else body
        if self.status is None and not self.drop and not self.latency_ms:
            raise FaultRuleError("a fault needs a status, latency_ms or drop")
        if self.after and (self.status is not None or not (self.drop or self.latency_ms)):
            raise FaultRuleError("an after-handler fault delays (latency_ms) or loses (drop) the real response")
        if self.times is not None and self.times < 1:
            raise FaultRuleError("times must be >= 1")
        if self.skip < 0:
            raise FaultRuleError("skip must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise FaultRuleError("probability must be within 0..1")
        self._regex = re.compile(self.path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        allowed = {
            "path", "method", "status", "body", "headers", "latency_ms", "drop", "after",
            "times", "probability", "duration_s", "fixture", "skip",
        }
        unknown = set(data) - allowed
        if unknown:
            raise FaultRuleError(f"unknown fault keys: {sorted(unknown)}")
        try:
            return cls(**data)
        except (TypeError, re.error) as exc:
            raise FaultRuleError(str(exc)) from exc

    def expired(self, now: float) -> bool:
        if self.times is not None and self.times <= 0:
            return True
        return self.duration_s is not None and now - self.created_monotonic >= self.duration_s

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return self._regex.search(path) is not None

    def to_json(self) -> dict[str, Any]:
        remaining_s = None
        if self.duration_s is not None:
            remaining_s = max(0.0, self.duration_s - (time.monotonic() - self.created_monotonic))
        return {
            "id": self.id, "path": self.path, "method": self.method, "status": self.status,
            "body": self.body, "headers": self.headers, "latency_ms": self.latency_ms, "drop": self.drop,
            "after": self.after, "times": self.times, "probability": self.probability, "duration_s": self.duration_s,
            "remaining_s": remaining_s, "hits": self.hits, "fixture": self.fixture, "skip": self.skip,
        }


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, rule: FaultRule | None = None, /, **kwargs: Any) -> FaultRule:
        """``add(FaultRule(...))`` or ``add(path=..., status=429, headers={"Retry-After": "2.5"}, times=1)``."""
        rule = rule or FaultRule(**kwargs)
        with self._lock:
            rule.id = f"fault-{next(self._ids)}"
            self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def reseed(self, seed: int | None = None) -> None:
        with self._lock:
            self._seed = self._seed if seed is None else seed
            self._rng = random.Random(self._seed)

    def active(self) -> list[FaultRule]:
        with self._lock:
            self._prune(time.monotonic())
            return list(self._rules)

    def match(self, method: str, path: str) -> FaultRule | None:
        """The rule to apply to this request (consuming one of its ``times``), or None."""
        with self._lock:
            self._prune(time.monotonic())
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                if rule.skip:
                    rule.skip -= 1
                    continue
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
                return rule
            return None

    def _prune(self, now: float) -> None:
        self._rules = [r for r in self._rules if not r.expired(now)]
