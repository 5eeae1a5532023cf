"""A client-side rate limit shared by every process through Redis: GCRA with reservations.

Graph throttles role-management writes per tenant and app. Two workers that each pace themselves would together
still exceed the limit, so the pacing state lives in Redis: one key holds the "theoretical arrival time" (TAT) of
the next conforming request, in microseconds of the Redis server clock (every process sees the same clock).

`acquire()` runs one Lua script that *reserves* the caller's slot (moves the TAT forward by one interval) and
returns how long to wait for it; the caller then sleeps, in small steps, until its slot. Reservations make the
limiter fair (first come, first served) and cost one Redis round trip per write, however long the queue: a burst
of 1,000 revocations is spread at exactly `rate` per second instead of hammering Redis or Graph. A caller whose
slot would be further away than its timeout reserves nothing and gets `RateLimitTimeout` at once.

If Redis cannot be reached the limiter degrades to the same algorithm in process memory (logged), so a Redis blip
slows revocations down instead of stopping them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import redis

from services.errors import ServiceError

log = logging.getLogger(__name__)

# KEYS[1]: TAT key. ARGV: interval (us), tolerance (us) = (burst - 1) * interval, max wait (us).
# Returns {1, wait_us} after reserving a slot, or {0, wait_us} (nothing reserved) when the wait exceeds max wait.
GCRA_RESERVE_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, math.floor(wait)} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor(wait)}
"""

# KEYS[1]: TAT key. ARGV: hold (us), tolerance (us). Moves the TAT so that the next reservation waits at least
# `hold` from now; never earlier than a TAT already further out.
GCRA_HOLD_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_tat = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < until_tat then
  redis.call('SET', KEYS[1], string.format('%.0f', until_tat), 'PX', math.ceil((until_tat - now) / 1000) + 1000)
end
return 1
"""


class RateLimitTimeout(ServiceError):
    """The next slot is further away than the caller is willing to wait; nothing was reserved."""

    def __init__(self, key: str, retry_after: float):
        self.key = key
        self.retry_after = retry_after
        super().__init__(f"rate limit {key}: next slot in {retry_after:.2f}s")


class _LocalGcra:
    """The same reservation algorithm in process memory (fallback while Redis is unreachable)."""

    def __init__(self, interval_us: int, tolerance_us: int, now_us: Callable[[], float]):
        self.interval_us = interval_us
        self.tolerance_us = tolerance_us
        self._now_us = now_us
        self._tat = 0.0
        self._lock = threading.Lock()

    def reserve(self, max_wait_us: float) -> tuple[bool, float]:
        with self._lock:
            now = self._now_us()
            tat = max(self._tat, now)
            wait = max(0.0, tat - self.tolerance_us - now)
            if wait > max_wait_us:
                return False, wait
            self._tat = tat + self.interval_us
            return True, wait

    def hold(self, hold_us: float) -> None:
        with self._lock:
            self._tat = max(self._tat, self._now_us() + hold_us + self.tolerance_us)


class RateLimiter:
    """At most `rate` acquisitions per second across all processes sharing `key`, with bursts of `burst`."""

    def __init__(self, client: redis.Redis | None, key: str, rate: float, burst: int = 1, *,
                 step_s: float = 0.1, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.redis = client
        self.key = key
        self.rate = rate
        self.burst = burst
        # Round the interval up: the limiter may be a hair slower than `rate`, never faster.
        self.interval_us = math.ceil(1_000_000 / rate)
        self.tolerance_us = (burst - 1) * self.interval_us
        self.step_s = step_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._script = client.register_script(GCRA_RESERVE_LUA) if client is not None else None
        self._hold_script = client.register_script(GCRA_HOLD_LUA) if client is not None else None
        self._local = _LocalGcra(self.interval_us, self.tolerance_us, lambda: time.monotonic() * 1_000_000)
        self._warned_at = -math.inf

    def reserve(self, max_wait_s: float) -> float:
        """Reserve the next slot; returns the seconds until it. Raises RateLimitTimeout if that exceeds
        `max_wait_s` (then nothing is reserved)."""
        max_wait_us = min(max(0.0, max_wait_s) * 1_000_000, 1e15)  # "forever" still fits a Lua number
        allowed, wait_us = self._reserve(max_wait_us)
        if not allowed:
            raise RateLimitTimeout(self.key, wait_us / 1_000_000)
        return wait_us / 1_000_000

    def _reserve(self, max_wait_us: float) -> tuple[bool, float]:
        if self._script is None:
            return self._local.reserve(max_wait_us)
        try:
            allowed, wait = self._script(keys=[self.key], args=[self.interval_us, self.tolerance_us,
                                                                math.floor(max_wait_us)])
            return bool(int(allowed)), float(wait)
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limiter falling back to process-local pacing: Redis unavailable",
                            extra={"limiter": self.key, "error": type(exc).__name__})
            return self._local.reserve(max_wait_us)

    def hold(self, seconds: float) -> None:
        """Nobody sharing the key gets a slot for `seconds` from now (an upstream's Retry-After: throttling is
        per app and tenant, so every process waits it out, not only the one that was told)."""
        hold_us = math.ceil(max(0.0, seconds) * 1_000_000)
        self._local.hold(hold_us)
        if self._hold_script is None:
            return
        try:
            self._hold_script(keys=[self.key], args=[hold_us, self.tolerance_us])
        except redis.RedisError as exc:
            log.warning("rate limiter hold kept in this process only: Redis unavailable",
                        extra={"limiter": self.key, "error": type(exc).__name__})

    def acquire(self, timeout: float | None = 30.0) -> float:
        """Block until this caller may proceed; returns the seconds waited."""
        wait = self.reserve(math.inf if timeout is None else timeout)
        if wait <= 0:
            return 0.0
        deadline = self._monotonic() + wait
        while True:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return wait
            self._sleep(min(self.step_s, remaining))

    def try_acquire(self) -> bool:
        """Take a slot only if one is free right now."""
        try:
            return self.reserve(0.0) <= 0
        except RateLimitTimeout:
            return False


class PerUserLimit:
    """The same GCRA, one bucket per user (a token bucket of `burst` tokens refilled at `per_minute`): each user
    costs one Redis key that expires once their bucket is full again, so counting is O(1) memory per user and a
    flood costs nothing more than its first request. `allow` never waits: over the limit is simply "no".

    If Redis cannot be reached the limit is not applied (logged once a minute): the request that follows needs Redis
    anyway and fails on its own, and a limiter must not be the reason nobody can reach the bot."""

    def __init__(self, client: redis.Redis, prefix: str, kind: str, per_minute: float, burst: int):
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be positive and burst at least 1")
        self.redis = client
        self.prefix = f"{prefix}:limit:{kind}"
        self.interval_us = math.ceil(60_000_000 / per_minute)
        self.tolerance_us = (burst - 1) * self.interval_us
        self._script = client.register_script(GCRA_RESERVE_LUA)
        self._warned_at = -math.inf

    def allow(self, user: str) -> bool:
        try:
            allowed, _ = self._script(keys=[f"{self.prefix}:{user.lower()[:64]}"],
                                      args=[self.interval_us, self.tolerance_us, 0])
            return bool(int(allowed))
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("per-user limit not applied: Redis unavailable",
                            extra={"limiter": self.prefix, "error": type(exc).__name__})
            return True
