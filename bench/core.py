"""Shared pieces of the measurements: sizes (full and --quick), result rows, and small helpers that talk to the
running product (queue idle, Teams activities, waiting for states)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis

from bench.env import Stack
from bench.stats import summary
from services.state.queue import worker_queues
from tests.teams_activities import invoke


@dataclass(frozen=True)
class Sizes:
    users: int  # synthetic directory users seeded into the Graph emulator
    floor_samples: int  # per repetition
    approve_clicks: int  # per repetition
    approve_reps: int
    ack_rate: float
    ack_seconds: float
    ack_reps: int
    stagger_grants: int
    stagger_grant_s: int
    stagger_every_s: float
    scale_active: int
    scale_sampled: int
    scale_sample_every_s: float
    scale_hold_s: int  # the sampled grants stay active together this long after the last one is approved
    burst_grants: int
    burst_reps: int
    tick_scales: tuple[int, ...]
    ticks: int
    endpoint_seconds: float
    endpoint_reps: int
    endpoint_rate: float
    memory_requests: int
    memory_approvals: int
    token_jobs: int
    token_reps: int
    report_events: int = 100_000  # audit events the usage report reads


FULL = Sizes(users=7000, floor_samples=100, approve_clicks=40, approve_reps=5, ack_rate=50, ack_seconds=60,
             ack_reps=2, stagger_grants=200, stagger_grant_s=30, stagger_every_s=1.5, scale_active=10_000,
             scale_sampled=100, scale_sample_every_s=0.3, scale_hold_s=30, burst_grants=1000, burst_reps=2,
             tick_scales=(1_000, 10_000, 100_000), ticks=50, endpoint_seconds=20, endpoint_reps=3,
             endpoint_rate=300, memory_requests=10_000, memory_approvals=1000, token_jobs=500, token_reps=2)
QUICK = Sizes(users=700, floor_samples=30, approve_clicks=5, approve_reps=2, ack_rate=50, ack_seconds=3,
              ack_reps=1, stagger_grants=6, stagger_grant_s=5, stagger_every_s=0.5, scale_active=500,
              scale_sampled=6, scale_sample_every_s=0.3, scale_hold_s=4, burst_grants=60, burst_reps=1,
              tick_scales=(500, 1_000, 2_000), ticks=10, endpoint_seconds=2, endpoint_reps=1, endpoint_rate=300,
              memory_requests=500, memory_approvals=30, token_jobs=30, token_reps=1, report_events=10_000)


@dataclass
class Row:
    """One line of the report. `values` are the samples the statistics are taken over: single latencies, or one
    figure per repetition (throughput, RSS, a count) — `sample` says which."""

    key: str
    title: str
    unit: str
    values: list[float]
    goal: str
    passed: bool | None
    how: str = ""
    sample: str = "latency"
    floor_ratio: dict[str, float] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "unit": self.unit, "stats": summary(self.values),
                "goal": self.goal, "passed": self.passed, "how": self.how, "sample": self.sample,
                "floor_ratio": self.floor_ratio, "detail": self.detail, "values": self.values}


@dataclass
class Ctx:
    stack: Stack
    sizes: Sizes
    quick: bool
    log: Callable[[str], None]
    floor: list[float] | None = None  # floor samples (ms) of this run taken idle, like the approve clicks
    floor_warm: list[float] | None = None  # the same floor in batches (warm), for rows measured under load
    next_user: int = 1

    def users(self, count: int) -> list[int]:
        """Distinct synthetic users for new grants (wrapping around: each measurement starts on a flushed Redis)."""
        if self.next_user + count - 1 > self.sizes.users:
            self.next_user = 1
        if count > self.sizes.users:
            raise ValueError(f"need {count} users, only {self.sizes.users} seeded")
        first = self.next_user
        self.next_user += count
        return list(range(first, first + count))


def queue_idle(client: redis.Redis) -> bool:
    return all(len(queue) == 0 and queue.started_job_registry.count == 0 for queue in worker_queues(client))


def wait_idle(client: redis.Redis, timeout: float = 600, settle: float = 0.0) -> float:
    began = time.monotonic()
    deadline = began + timeout
    while not queue_idle(client):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job queue did not drain within {timeout:.0f}s")
        time.sleep(0.05)
    if settle:
        time.sleep(settle)
    return time.monotonic() - began


def approve_activity(store: Any, request_id: str, service_url: str, alias: str = "dana") -> dict[str, Any]:
    """Dana's click on the approvals channel's copy of the request's card (she has no personal chat in the bench),
    as Teams sends it: replying to that card activity, with the card's terms digest."""
    record = store.require(request_id)
    ref = next((c for c in record.cards if c.audience == "channel"), None)
    if ref is None:
        raise RuntimeError(f"{request_id} has no channel card to click (notifications not drained?)")
    activity = invoke(alias, "request.approve", {"requestId": request_id, "terms": record.terms_digest}, service_url,
                      reply_to_id=ref.activity_id, conversation=ref.conversation_id)
    activity["conversation"]["conversationType"] = "channel"
    return activity


def refresh_activity(request_id: str, service_url: str, alias: str = "morgan") -> dict[str, Any]:
    return invoke(alias, "request.refresh", {"requestId": request_id}, service_url, trigger="automatic")


class BotClient:
    """A keep-alive HTTP/1.1 client for one-at-a-time requests (the latency measurements)."""

    def __init__(self, url: str, token: str):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self.token = token

    def post(self, activity: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(activity).encode()
        self.conn.request("POST", "/api/messages", body=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def ms(seconds: float) -> float:
    return seconds * 1000.0


def mb(value: float) -> float:
    return value / (1024 * 1024)
