"""The shared write limiter (GCRA with reservations in Redis): threads and processes together stay under the rate."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.state.limiter import RateLimiter, RateLimitTimeout

from .workers import limiter_stamps

KEY = "bgt:ratelimit:test"


def conforms(stamps: list[float], rate: float, start: float, burst: int = 1, slack_s: float = 0.005) -> bool:
    """Never ahead of the schedule: the k-th grant (0-based, in time order) comes no earlier than
    `start + (k - burst + 1) / rate`, where `start` (wall clock, the Redis server's clock on this host too) is
    before the first reservation. A caller that sees its slot late (thread scheduling on a busy machine) only
    makes its stamp later, so load cannot fail this; an unpaced burst puts dozens of grants right after `start`."""
    ordered = sorted(stamps)
    return all(stamp >= start + (k - burst + 1) / rate - slack_s for k, stamp in enumerate(ordered))


def test_one_caller_is_paced_evenly(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, KEY, rate=50, step_s=0.01)
    start = time.time()
    started = time.monotonic()
    stamps = []
    for _ in range(26):
        limiter.acquire()
        stamps.append(time.time())
    elapsed = time.monotonic() - started

    assert 0.5 - 0.01 <= elapsed < 1.5
    assert conforms(stamps, 50, start)


def test_two_threads_together_stay_under_the_rate(redis_client: redis.Redis) -> None:
    stamps: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def worker() -> None:
        limiter = RateLimiter(redis_client, KEY, rate=40, step_s=0.01)  # separate objects, shared key
        barrier.wait()
        for _ in range(15):
            limiter.acquire()
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(stamps) == 30
    assert conforms(stamps, 40, start)


def test_two_processes_together_stay_under_the_rate(redis_client: redis.Redis, redis_url: str) -> None:
    start_at = time.time() + 1.5
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(limiter_stamps, [(redis_url, KEY, 50.0, 25, start_at)] * 2)

    stamps = [s for r in results for s in r]
    assert len(stamps) == 50
    assert conforms(stamps, 50, start_at)


def test_burst_then_pacing(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, KEY, rate=10, burst=5, step_s=0.01)
    started = time.monotonic()
    for _ in range(5):
        assert limiter.acquire() == 0.0
    assert time.monotonic() - started < 0.2
    waited = limiter.acquire()
    assert 0.05 < waited <= 0.1 + 0.005


def test_a_slot_further_away_than_the_timeout_is_refused_at_once_and_not_reserved(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, KEY, rate=1)
    limiter.acquire()
    started = time.monotonic()
    with pytest.raises(RateLimitTimeout) as first:
        limiter.acquire(timeout=0.2)
    with pytest.raises(RateLimitTimeout) as second:
        limiter.acquire(timeout=0.2)

    assert time.monotonic() - started < 0.1
    assert 0.8 < first.value.retry_after <= 1.0
    assert second.value.retry_after <= first.value.retry_after  # the refused caller took no slot
    assert limiter.try_acquire() is False


def test_without_redis_it_paces_in_process() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    limiter = RateLimiter(unreachable, KEY, rate=50, step_s=0.01)
    start = time.time()
    stamps = []
    for _ in range(11):
        limiter.acquire()
        stamps.append(time.time())
    assert conforms(stamps, 50, start)


def test_rate_and_burst_are_validated(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError):
        RateLimiter(redis_client, KEY, rate=0)
    with pytest.raises(ValueError):
        RateLimiter(redis_client, KEY, rate=1, burst=0)


def test_a_hold_makes_every_process_wait_it_out(redis_client: redis.Redis) -> None:
    """Graph's Retry-After is for the app, not for the one request: after `hold`, the next slot anyone sharing the
    key reserves is no sooner than the hold's end, and a hold never shortens a longer wait already promised."""
    one = RateLimiter(redis_client, KEY, rate=1000, burst=5)
    other = RateLimiter(redis_client, KEY, rate=1000, burst=5)
    assert other.reserve(1.0) == 0.0
    one.hold(0.4)
    assert 0.35 <= other.reserve(5.0) <= 0.4
    one.hold(0.1)  # shorter than the one in force: changes nothing
    assert 0.3 <= other.reserve(5.0) <= 0.41
    with pytest.raises(RateLimitTimeout) as caught:
        other.reserve(0.05)
    assert 0.3 <= caught.value.retry_after <= 0.41


def test_a_hold_without_redis_holds_this_process() -> None:
    local = RateLimiter(None, KEY, rate=1000, burst=5)
    local.hold(0.3)
    assert 0.25 <= local.reserve(5.0) <= 0.3
