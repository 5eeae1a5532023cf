"""An in-process product for integration tests: the emulator stack in threads, real Redis, real clients, the
real aiohttp app, and RQ jobs run in this process on demand (SimpleWorker in burst mode).

Time: the product runs on an OffsetClock landing on Monday 2026-11-23 10:00 Berlin (inside business hours), and
the emulators share the same offset, so a PIM window and the product agree on "now". `advance()` moves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from jobs.context import install
from services.clock import OffsetClock
from services.composition import Runtime, Services
from services.emulators import seed as demo
from services.emulators.botauth import DEMO_BOT_APP_ID
from services.emulators.botconnector import personal_conversation_id
from services.emulators.entra import DEMO_GRAPH_CLIENT_ID, DEMO_GRAPH_CLIENT_SECRET, DEMO_TENANT_ID
from services.emulators.stack import StackConfig, ThreadedStack
from services.settings import Settings
from services.state.queue import JSONJob, JSONQueue, worker_queues
from tests.conftest import AUDIT_KEY

TENANT = DEMO_TENANT_ID
BOT_ID = f"28:{DEMO_BOT_APP_ID}"
MONDAY_10_BERLIN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
EMULATORS = ["entra", "graph", "servicenow", "botconnector"]


def offset_to(target: datetime) -> float:
    # A whole number of seconds, as in production (no offset): the product's whole seconds are then the real ones
    # the scheduler ticks on, so expiry timing is measured as it would be in production.
    return float(round((target - datetime.now(UTC)).total_seconds()))


def person(alias: str) -> demo.Person:
    return demo.BY_ALIAS[alias]


def start_stack(tmp: Path, offset_s: float, emulators: list[str] | None = None,
                **config: Any) -> tuple[ThreadedStack, Path]:
    bundle = tmp / "ca-bundle.pem"
    config = {"pim_min_active_seconds": 0, **config}
    stack = ThreadedStack.start(StackConfig(emulators={n: {} for n in (emulators or EMULATORS)}, seed="demo",
                                            entra_ca_bundle_out=str(bundle), clock_offset_s=offset_s, **config))
    return stack, bundle


def product_settings(urls: dict[str, str], redis_url: str, data_dir: Path, offset_s: float,
                     **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        env="development", redis_url=redis_url, key_prefix="bgt", data_dir=data_dir,
        audit_hmac_key=AUDIT_KEY.decode(), clock_offset_s=offset_s, log_format="text",
        app_id="", entra_tenant_id=TENANT, entra_client_id=DEMO_GRAPH_CLIENT_ID,
        entra_client_secret=DEMO_GRAPH_CLIENT_SECRET, pim_min_active_s=0, triage_provider="rules",
        teams_approvals_channel_id=demo.APPROVALS_CHANNEL_ID, teams_app_manifest_id=demo.TEAMS_APP_MANIFEST_ID,
    )
    if "entra" in urls:
        values["entra_authority_host"] = urls["entra"]
    if "graph" in urls:
        values["graph_base_url"] = urls["graph"] + "/v1.0"
    if "servicenow" in urls:
        values.update(itsm="servicenow", servicenow_instance_url=urls["servicenow"],
                      servicenow_username="svc_breakglass", servicenow_password="breakglass-demo-password")
    if "botconnector" in urls:
        values["teams_service_url"] = urls["botconnector"] + "/"
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Product:
    stack: ThreadedStack
    settings: Settings
    runtime: Runtime
    services: Services
    clock: OffsetClock
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def emulators(self) -> dict[str, Any]:
        return self.stack.emulators

    @property
    def graph(self) -> Any:
        return self.stack.emulators["graph"]

    @property
    def connector(self) -> Any:
        return self.stack.emulators["botconnector"]

    @property
    def servicenow(self) -> Any:
        return self.stack.emulators["servicenow"]

    @property
    def store(self) -> Any:
        return self.runtime.store

    @property
    def audit(self) -> Any:
        return self.runtime.audit

    @property
    def service_url(self) -> str:
        return self.settings.teams_service_url

    def advance(self, seconds: float) -> None:
        """Move the product and every emulator forward together."""
        self.clock.advance(timedelta(seconds=seconds))
        # The emulators of one stack share a clock: move each clock once, not once per emulator.
        for clock in {id(e.clock): e.clock for e in self.stack.emulators.values()}.values():
            clock.advance(seconds)

    def run_jobs(self, *, due: bool = True) -> int:
        """Run queued (and, with due=True, scheduled-and-due) jobs in this process until the queue is empty."""
        install(self.services)
        total = 0
        for _ in range(20):
            if due:
                self.fire_due()
            queues = worker_queues(self.runtime.redis)
            count = sum(len(queue) for queue in queues)
            if not count:
                break
            worker = SimpleWorker(queues, connection=self.runtime.redis, serializer=JSONSerializer,
                                  job_class=JSONJob, queue_class=JSONQueue)
            worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
            total += count
        return total

    def fire_due(self) -> int:
        """rq-scheduler's move of due jobs, against the product clock (which tests may have jumped forward)."""
        scheduler = self.services.queue.scheduler
        until = int((datetime.now(UTC) + self.clock.jumped).timestamp())
        moved = 0
        for job in list(scheduler.get_jobs(until=until)):
            scheduler.enqueue_job(job)
            moved += 1
        return moved

    def personal(self, alias: str) -> str:
        return personal_conversation_id(TENANT, person(alias).mri, BOT_ID)

    def stop(self) -> None:
        self.stack.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a product process needs to load exactly these settings."""
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        alias = info.validation_alias.choices[0] if info.validation_alias is not None else name  # type: ignore[union-attr]
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, dict | list):
            import json
            value = json.dumps(value)
        env[str(alias)] = str(value)
    return env


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, like the OOM killer or a lost node. An RQ work horse
    runs in its own process group and would otherwise outlive its worker and finish the job."""
    import psutil

    try:
        parent = psutil.Process(pid)
        victims = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass


class Processes:
    """Real `breakglass worker` / `breakglass scheduler` processes, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.env = {**os.environ, **settings_env(settings)}
        self.log_dir = log_dir
        self.procs: dict[str, Any] = {}

    def start(self, name: str, *args: str) -> Any:
        import subprocess
        import sys

        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[1]))
        self.procs[name] = proc
        return proc

    def worker(self, name: str = "worker", *extra: str) -> Any:
        return self.start(name, "worker", "--name", f"test-{name}-{os.getpid()}", *extra)

    def scheduler(self, name: str = "scheduler") -> Any:
        return self.start(name, "scheduler")

    def stop(self, name: str, *, kill: bool = False, timeout: float = 15) -> None:
        import signal
        import subprocess

        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        if kill:
            kill_tree(proc.pid)
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, kill=True)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_product(tmp: Path, redis_client: redis.Redis, redis_url: str, *, emulators: list[str] | None = None,
                  stack_config: dict[str, Any] | None = None, **overrides: Any) -> Product:
    offset = offset_to(MONDAY_10_BERLIN)
    stack, bundle = start_stack(tmp, offset, emulators, **(stack_config or {}))
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
    settings = product_settings(stack.urls, redis_url, tmp / "state", offset, **overrides)
    clock = OffsetClock(timedelta(seconds=offset))
    runtime = Runtime(settings, clock=clock, client=redis_client)
    services = Services(runtime)
    return Product(stack=stack, settings=settings, runtime=runtime, services=services, clock=clock)
