"""Audit integrity: a log written by real grants and revocations, tampered with in every way at every position,
is caught by `breakglass audit verify` (the real command) at the first bad sequence number; verifying a live log
never cries wolf; and an outcome Graph confirmed is never missing from the log after the process died.

The synthetic-log cases at fixed positions live in tests/integration/test_audit.py; this module goes through every
position of a real log and through the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from policies.lifecycle import State
from services.composition import Runtime, Services
from services.state.queue import job_id
from tests.harness import Product, settings_env, start_product
from tests.integration.jobs.conftest import submit, wait_for
from tests.integration.test_audit import rechain
from tests.resilience.conftest import (
    GA,
    RECONCILER_BOUND_S,
    ROOT,
    assignments,
    audit_events,
    kill_9,
    logs,
    reach,
    time_limit,
)

EVENTS, HEAD, CHECKPOINTS = "bgt:audit:events", "bgt:audit:head", "bgt:audit:checkpoints"


@pytest.fixture()
def logged(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[Product]:
    """A product whose audit log holds a real day's work: grants (one refused by Graph), an extension-free expiry,
    a deactivation; a checkpoint every 10 events."""
    product = start_product(tmp_path, redis_client, redis_url, audit_checkpoint_every=10)
    try:
        from services.workflow.access import Who
        from tests.factories import PEOPLE

        sam = submit(product, "sam", seconds=60)
        riley = submit(product, "riley", seconds=600)
        product.run_jobs()
        product.advance(61)
        product.run_jobs()
        who = Who(PEOPLE["riley"].object_id, "Riley Chen")
        product.services.access.deactivate(riley.id, who)
        product.run_jobs()
        assert product.store.get(sam.id).state is State.EXPIRED
        assert product.store.get(riley.id).state is State.REVOKED
        assert product.audit.verify().ok and product.audit.count() >= 30
        yield product
    finally:
        product.stop()


class Tamper:
    """Take the log apart and put it back exactly as it was between two trials."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.saved = (client.lrange(EVENTS, 0, -1), client.get(HEAD), client.hgetall(CHECKPOINTS))

    def restore(self) -> None:
        events, head, checkpoints = self.saved
        with self.client.pipeline() as pipe:
            pipe.delete(EVENTS, HEAD, CHECKPOINTS)
            pipe.rpush(EVENTS, *events)
            pipe.set(HEAD, head)
            pipe.hset(CHECKPOINTS, mapping=checkpoints)
            pipe.execute()

    @property
    def count(self) -> int:
        return len(self.saved[0])

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.saved[0]]

    # Each returns the sequence number `audit verify` must name.
    def edit(self, seq: int) -> int:
        event = self.events()[seq - 1]
        event["data"]["note"] = "nothing to see here"
        self.client.lset(EVENTS, seq - 1, json.dumps(event))
        return seq

    def delete(self, seq: int) -> int:
        self.client.lrem(EVENTS, 1, self.saved[0][seq - 1])
        return seq

    def reorder(self, seq: int) -> int:
        other = self.count if seq == self.count - 1 else seq + 1 + (seq % 3)
        other = min(other, self.count)
        if other == seq:
            seq, other = seq - 1, seq
        self.client.lset(EVENTS, seq - 1, self.saved[0][other - 1])
        self.client.lset(EVENTS, other - 1, self.saved[0][seq - 1])
        return seq

    def truncate(self, seq: int) -> int:
        """Drop the newest events from `seq` on (the newest N = count - seq + 1)."""
        if seq == 1:
            self.client.delete(EVENTS)
        else:
            self.client.ltrim(EVENTS, 0, seq - 2)
        return seq

    def rechain(self, seq: int) -> int:
        """Edit one event, then recompute every hash after it and re-sign with a key that is not the real one."""
        events = self.events()
        events[seq - 1]["actor"] = "someone-else"
        rechain(self.client, events, seq - 1, b"not-the-real-audit-key-0123456789abcdef")
        return seq


KINDS = ["edit", "delete", "reorder", "truncate", "rechain"]


def test_every_tampering_at_every_position_is_named(logged, redis_client):
    tamper = Tamper(redis_client)
    for kind in KINDS:
        for seq in range(1, tamper.count + 1):
            expected = getattr(tamper, kind)(seq)
            result = logged.audit.verify()
            tamper.restore()
            assert not result.ok and result.first_bad_seq == expected, (kind, seq, result)
    assert logged.audit.verify().ok


def audit_verify(product: Product) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(product.settings.data_dir), **settings_env(product.settings)}
    return subprocess.run([sys.executable, "-m", "services.ops.cli", "audit", "verify"], capture_output=True, text=True,
                          env=env, timeout=60, cwd=str(ROOT))


@pytest.mark.parametrize("kind", KINDS)
def test_the_audit_verify_command_names_the_first_bad_sequence_number(logged, redis_client, kind):
    tamper = Tamper(redis_client)
    seq = random.Random(f"issue-6-{kind}").randrange(2, tamper.count)
    expected = getattr(tamper, kind)(seq)
    result = audit_verify(logged)
    assert result.returncode == 1, result
    assert result.stdout.startswith(f"FAILED at seq {expected}:"), result.stdout
    tamper.restore()
    clean = audit_verify(logged)
    assert clean.returncode == 0 and clean.stdout.startswith("OK"), clean


def test_verifying_a_live_log_never_reports_tampering(logged):
    """Workers append while an operator runs `audit verify`: an event appended between reading the events and
    reading the signed head used to be reported as a truncation."""
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            logged.audit.append("load.test", actor="system:test", data={"n": 1})

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 5
        results = []
        while time.monotonic() < deadline and len(results) < 60:
            results.append(logged.audit.verify())
    finally:
        stop.set()
        writer.join(timeout=5)
    assert [r for r in results if not r.ok] == []
    assert logged.audit.verify().ok


# --- the process dies between a Graph success and its audit write ---------------------------------------------

class Crash(BaseException):
    """The process dies here (a BaseException, so no `except Exception` in the product can swallow it)."""


def crashing_client(url: str, when: Callable[[tuple[Any, ...]], bool]) -> redis.Redis:
    """A Redis client that "kills the process" right before the first command matching `when` reaches Redis."""

    class Crashing(redis.Redis):
        armed = True

        def execute_command(self, *args: Any, **options: Any) -> Any:
            if Crashing.armed and when(args):
                Crashing.armed = False
                raise Crash(args[0])
            return super().execute_command(*args, **options)

    return Crashing.from_url(url)


def audit_write_of(event: str) -> Callable[[tuple[Any, ...]], bool]:
    return lambda args: args[0] == "EVALSHA" and any(f'"event":"{event}"' in str(a) for a in args)


def restart(product: Product, client: redis.Redis) -> Services:
    """A new process: fresh clients and state, the same Redis, the emulators untouched."""
    return Services(Runtime(product.settings, clock=product.clock, client=client))


@pytest.mark.parametrize("mode", ["pim", "direct"])
def test_a_crash_between_graph_accepting_a_grant_and_its_audit_write_loses_no_event(tmp_path, redis_client,
                                                                                   redis_url, mode):
    client = crashing_client(redis_url, audit_write_of("grant.activated"))
    product = start_product(tmp_path, client, redis_url, grant_mode=mode, reconcile_interval_s=3)
    try:
        record = submit(product, "sam", seconds=600)
        product.services.queue.cancel(job_id("grant", record.id))  # this process took the job ...
        with pytest.raises(Crash):
            product.services.grants.activate(record.id)  # ... and died running it
        sam = record.request.target
        assert len(assignments(product, sam, GA)) == 1  # Graph did it; the log does not say so yet
        services = restart(product, redis_client)
        product.advance(4)  # more than one reconciler period: the request is stuck
        assert services.reconciler.tick().resumed_activations == [record.id]
        product.services = services
        product.run_jobs()
        active = product.store.get(record.id)
        assert active.state is State.ACTIVE and active.grant.adopted
        [activated] = audit_events(product, record.id, "grant.activated")
        assert activated.data["assignment_id"] == assignments(product, sam, GA)[0]["id"]
        assert product.audit.verify().ok
    finally:
        product.stop()


def test_a_crash_between_graph_removing_an_assignment_and_its_audit_write_loses_no_event(tmp_path, redis_client,
                                                                                        redis_url):
    client = crashing_client(redis_url, audit_write_of("grant.expired"))
    product = start_product(tmp_path, client, redis_url, grant_mode="direct", reconcile_interval_s=3)
    try:
        record = submit(product, "sam", seconds=60)
        product.run_jobs()
        active = product.store.get(record.id)
        product.advance(61)
        product.services.queue.cancel(f"revoke_{record.id}_{active.grant.generation}")  # handed to this process
        with pytest.raises(Crash):
            product.services.grants.revoke(record.id, active.grant.generation, "expired")
        assert assignments(product, record.request.target) == []  # removed in Graph, not yet in the log
        services = restart(product, redis_client)
        assert services.reconciler.tick().overdue_revokes == [record.id]
        product.services = services
        product.run_jobs()
        assert product.store.get(record.id).state is State.EXPIRED
        assert audit_events(product, record.id, "grant.revoke_requested")  # the intent, written first
        assert audit_events(product, record.id, "grant.expired")
        assert product.audit.verify().ok
    finally:
        product.stop()


@pytest.mark.slow
@time_limit(300)
def test_kill_9_while_graph_removes_the_assignment_the_outcome_is_still_audited(launch):
    """The same with a real worker killed while Graph's answer to the removal is on its way."""
    product, procs = launch(grant_mode="direct")
    procs.scheduler()
    procs.worker("first")
    record = submit(product, "sam", seconds=5)
    reach(product, record.id, State.ACTIVE, 30, logs(procs, "first"))
    product.graph.add_fault(path="roleManagement/directory/roleAssignments", method="DELETE", after=True,
                            latency_ms=600_000, times=1)
    wait_for(lambda: not assignments(product, record.request.target), 30, "Graph to remove the assignment")
    assert audit_events(product, record.id, "grant.revoke_requested")  # the intent is already in the log
    assert audit_events(product, record.id, "grant.expired") == []
    kill_9(procs, "first")
    procs.worker("second")
    reach(product, record.id, State.EXPIRED, RECONCILER_BOUND_S + 10, logs(procs, "second", "scheduler"))
    assert audit_events(product, record.id, "grant.expired")
    assert product.audit.verify().ok
