"""Entry points for child processes (multiprocessing "spawn"): simulated RQ work horses sharing Redis."""

from __future__ import annotations

import time
from typing import Any

import redis

from services.clients.graph import GraphClient
from services.clients.http import RetryPolicy
from services.clients.tokens import TokenProvider
from services.state.limiter import RateLimiter


def graph_jobs(config: dict[str, Any], jobs: int, start_at: float) -> dict[str, int]:
    """Run `jobs` Graph jobs; each builds a new TokenProvider, as a forked work horse starts with msal's memory
    cache empty, and makes one Graph call."""
    client = redis.Redis.from_url(config["redis_url"])
    time.sleep(max(0.0, start_at - time.time()))  # both processes start their first job together
    token_requests = 0
    for _ in range(jobs):
        provider = TokenProvider(client_id=config["client_id"], credential=config["secret"],
                                 authority=config["authority"], scopes=[config["scope"]], redis_client=client,
                                 key_prefix="bgt")
        graph = GraphClient(config["graph_base"], provider, retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01))
        assert graph.user(config["user"]) is not None
        token_requests += provider.token_requests
    return {"jobs": jobs, "token_requests": token_requests}


def limiter_stamps(redis_url: str, key: str, rate: float, count: int, start_at: float) -> list[float]:
    """Acquire `count` slots and return the wall-clock time each was granted."""
    limiter = RateLimiter(redis.Redis.from_url(redis_url), key, rate, step_s=0.01)
    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        limiter.acquire(timeout=30)
        stamps.append(time.time())
    return stamps
